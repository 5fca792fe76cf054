"""The wire: the Transport protocol, the SMTP pool, what replies mean, memory and catcher."""
