"""Central rules (`sensord run --role rules`): rules over the readings stream, not MQTT."""
