"""The SDK's sender process and what it needs: the app-side link, the IPC frames, the send loop, the spool.

``process`` runs in the app (starts the sender process, hands it frames through a pipe); ``main``
is the sender process's entry point (``python -m producers.sender.main``); ``loop`` runs librdkafka
and the spool inside it; ``ipc`` is the wire between the two; ``spool`` the on-disk log. Nothing
here imports pydantic or the contract: the sender process starts lean.
"""
