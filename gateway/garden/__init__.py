"""The walled garden: the names a captive station may reach before login, the SNI verdict on
the first TLS packet, its NFQUEUE reader, and the venue's own garden names from the cloud."""
