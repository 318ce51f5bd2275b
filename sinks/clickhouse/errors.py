"""Whose fault a failed ClickHouse write was: the rows' own, or the server's (then it is retried).

Read from clickhouse-connect's exception classes and ClickHouse's error codes (names as the engine's
``errorCodeToName`` gives them). The rows' own fault is a closed list, because the two mistakes cost
differently: a transient error taken for a bad row sends a good row to the dead-letter topic and
commits its offset (the outage of issue 11: 1,000 rows, 1,000 dead letters), while a bad row taken
for a transient error stalls the sink with the error on its status until someone looks. So:

* **The rows' fault** (isolated by splitting the batch, then dead-lettered): the client could not
  serialise a value for its column (``DataError`` without a server code, ``ValueError``,
  ``TypeError``, ``OverflowError``, ``struct.error``, ``UnicodeError``), or the server refused the
  data itself: :data:`ROW_CODES`.
* **Transient, everything else**, retried while consumption is paused: the transport
  (``OperationalError``, any ``OSError``: connection refused or reset, timeouts), a chdb directory
  held by another process, an HTTP error without a ClickHouse code (a proxy's 502/503), and server
  codes such as 202 TOO_MANY_SIMULTANEOUS_QUERIES, 252 TOO_MANY_PARTS, 209 SOCKET_TIMEOUT,
  210 NETWORK_ERROR, 241 MEMORY_LIMIT_EXCEEDED, 242 TABLE_IS_READ_ONLY, 243 NOT_ENOUGH_SPACE,
  3 UNEXPECTED_END_OF_FILE, 425 SYSTEM_ERROR (:data:`TRANSIENT_CODES`, listed for the record). Also
  deployment faults an operator fixes while the sink waits: 60 UNKNOWN_TABLE, 81 UNKNOWN_DATABASE,
  16 NO_SUCH_COLUMN_IN_TABLE, 497 ACCESS_DENIED, 516 AUTHENTICATION_FAILED, 164 READONLY — no row is
  at fault there, and every row would be "refused" alike — and any code not listed here.
"""

from __future__ import annotations

import struct

from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from infra.clickhouse import ClickHouseBusyError
from sinks.protocol import Fault

#: Server codes that blame the data: a value that cannot be parsed or converted for its column, is out
#: of its type's range, breaks a constraint, or is too large for the column.
ROW_CODES: frozenset[int] = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        128,  # TOO_LARGE_ARRAY_SIZE
        131,  # TOO_LARGE_STRING_SIZE
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        376,  # CANNOT_PARSE_UUID
        407,  # DECIMAL_OVERFLOW
        441,  # CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING
        467,  # CANNOT_PARSE_BOOL
        469,  # VIOLATED_CONSTRAINT
        675,  # CANNOT_PARSE_IPV4
        676,  # CANNOT_PARSE_IPV6
    }
)

#: Server codes that say "not now" (for the record and the tests: every code outside ROW_CODES is
#: treated as transient anyway).
TRANSIENT_CODES: frozenset[int] = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE (connection cut mid-request)
        74,  # CANNOT_READ_FROM_FILE_DESCRIPTOR
        75,  # CANNOT_WRITE_TO_FILE_DESCRIPTOR
        95,  # CANNOT_READ_FROM_SOCKET
        96,  # CANNOT_WRITE_TO_SOCKET
        159,  # TIMEOUT_EXCEEDED
        160,  # TOO_SLOW
        173,  # CANNOT_ALLOCATE_MEMORY
        201,  # QUOTA_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        225,  # NO_ZOOKEEPER
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        243,  # NOT_ENOUGH_SPACE
        252,  # TOO_MANY_PARTS
        279,  # ALL_CONNECTION_TRIES_FAILED
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        364,  # RECEIVED_ERROR_TOO_MANY_REQUESTS
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        439,  # CANNOT_SCHEDULE_TASK
        473,  # DEADLOCK_AVOIDED
        735,  # QUERY_WAS_CANCELLED_BY_CLIENT
        749,  # TCP_CONNECTION_LIMIT_REACHED
        762,  # HTTP_CONNECTION_LIMIT_REACHED
        777,  # MEMORY_RESERVATION_KILLED
        778,  # MEMORY_RESERVATION_FAILED
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION
        1019,  # QUERY_SLOT_ACQUISITION_TIMEOUT
    }
)

#: Exceptions the client raises while serialising a value it cannot put in its column.
_SERIALISATION_ERRORS = (ValueError, TypeError, OverflowError, struct.error, UnicodeError)


def classify(error: BaseException) -> Fault:
    """Whose fault ``error``, raised by connecting, migrating or inserting, was (see the module doc)."""
    if isinstance(error, OperationalError | OSError | ClickHouseBusyError):
        return Fault.TRANSIENT
    if isinstance(error, DatabaseError):
        code = getattr(error, "code", None)
        if code is None:
            # Without a server code: the client refused a value (DataError), or an HTTP status
            # came back without a ClickHouse exception (a proxy or load balancer in between).
            return Fault.ROW if isinstance(error, DataError) else Fault.TRANSIENT
        return Fault.ROW if code in ROW_CODES else Fault.TRANSIENT
    if isinstance(error, _SERIALISATION_ERRORS):
        return Fault.ROW
    return Fault.TRANSIENT
