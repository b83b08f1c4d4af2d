"""The uplink: the router's one outbound channel to the cloud (enrolment identity, signed
requests, usage and presence upload, config pull, signed commands)."""
