"""The foundation beneath every stage: settings, Kafka clients and admin, the output producer,
the ClickHouse client, process helpers. It imports only ``schemas`` and libraries."""
