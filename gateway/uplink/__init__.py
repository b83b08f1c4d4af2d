"""The uplink: the router's one outbound channel to the cloud.

identity.py (who this router is: enrolment files; the portal's seam), enrolment.py (claiming
the router), transport.py (signed HTTP with size caps, backoff), commands.py (signed commands
checked and run once), sync.py (the Uplink: heartbeat, config pull, usage and presence upload,
its loops and metrics), start.py (how the daemon starts it), cloud_config.py (the venue config
file the uplink writes and three readers watch). Importing this package imports none of them.
"""
