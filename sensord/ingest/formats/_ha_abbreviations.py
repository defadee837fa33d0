"""Home Assistant MQTT discovery: the abbreviated keys, as data.

A discovery config may spell its keys short to save a device's memory (`stat_t` for
`state_topic`); Home Assistant lists them in its MQTT documentation, "Supported
abbreviations" (https://www.home-assistant.io/integrations/mqtt/#discovery-payload).
Only the keys that `homeassistant.py` reads, or that a sensor/binary-sensor config commonly
carries, are listed: an unknown key is ignored by Home Assistant and by sensord alike, so an
abbreviation of a key sensord never reads needs no expansion.
"""

from __future__ import annotations

# top-level keys of an entity's config (and of an `availability` entry: `t`, `pl_avail`,
# `pl_not_avail`, `val_tpl`)
ABBREVIATIONS: dict[str, str] = {
    "avty": "availability",
    "avty_mode": "availability_mode",
    "avty_t": "availability_topic",
    "avty_tpl": "availability_template",
    "cmps": "components",
    "dev": "device",
    "dev_cla": "device_class",
    "e": "encoding",
    "en": "enabled_by_default",
    "ent_cat": "entity_category",
    "ent_pic": "entity_picture",
    "exp_aft": "expire_after",
    "frc_upd": "force_update",
    "ic": "icon",
    "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template",
    "lrst_t": "last_reset_topic",
    "lrst_val_tpl": "last_reset_value_template",
    "name": "name",
    "o": "origin",
    "obj_id": "object_id",
    "off_dly": "off_delay",
    "p": "platform",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "qos": "qos",
    "stat_cla": "state_class",
    "stat_t": "state_topic",
    "sug_dsp_prc": "suggested_display_precision",
    "t": "topic",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
}

# keys of the `device` object
DEVICE_ABBREVIATIONS: dict[str, str] = {
    "cns": "connections",
    "cu": "configuration_url",
    "hw": "hw_version",
    "ids": "identifiers",
    "mdl": "model",
    "mdl_id": "model_id",
    "mf": "manufacturer",
    "name": "name",
    "sa": "suggested_area",
    "sn": "serial_number",
    "sw": "sw_version",
}

# keys of the `origin` object (who published the config: Zigbee2MQTT, ESPHome, …)
ORIGIN_ABBREVIATIONS: dict[str, str] = {
    "name": "name",
    "sw": "sw_version",
    "url": "support_url",
}


def expand(config: dict[str, object], table: dict[str, str]) -> dict[str, object]:
    """A copy of `config` with its abbreviated keys spelled out. A key given both ways
    keeps the long spelling's value (Home Assistant's result would depend on key order)."""
    out: dict[str, object] = {}
    for key, value in config.items():
        long = table.get(key, key)
        if long != key and long in config:
            continue
        out[long] = value
    return out
