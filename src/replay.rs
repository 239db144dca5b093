//! `shadowflow replay`: publishes a device data set over MQTT.
