"""The server fixtures (``tansu_broker``, ``s3_server``, ``unique``) live in tests/conftest.py."""
