"""Pure decisions, no I/O: retry routing, breaker state machine, rendition gate, in-order
acks, dead-letter views and replay planning. Nothing here imports faust, aiokafka or cv2."""
