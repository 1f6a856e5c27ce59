"""pyserial URL handlers: ``atemu://<profile-or-name>`` (see protocol_atemu)."""
