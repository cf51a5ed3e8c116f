"""Operating dtmx: metrics wiring, tracing, structured logs and the alert webhook.

Nothing here changes what the engine does: each part is told what happens (an observer, a
store wrapper, an invoker wrapper, an API wrapper) and is built only when configured, so a
server with tracing off neither imports OpenTelemetry nor makes span objects.
"""
