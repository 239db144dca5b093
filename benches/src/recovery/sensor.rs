//! A synthetic fleet of environment sensors: thing names and the JSON state they report.
//!
//! Every value is a pure function of the sensor number and a sequence number, so a data folder
//! can be written again bit for bit. A full state is about 200 bytes of compact JSON: eight
//! reported fields (numbers and strings) and three desired settings. A periodic reading
//! changes four reported numbers and is about 80 bytes.

/// Thing name of sensor `n`, such as `sensor-0000042`.
pub fn thing_name(n: u64) -> String {
    format!("sensor-{n:07}")
}

/// Mixes `value` into 64 well-spread bits (the SplitMix64 finaliser).
pub fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Returns the `desired` section an operator set for sensor `n`, as a compact JSON object.
pub fn desired_json(n: u64) -> String {
    let bits = mix(n);
    let interval_s = [30, 60, 300][(bits % 3) as usize];
    let led = if bits & 8 == 0 { "off" } else { "on" };
    format!(r#"{{"sampling_interval_s":{interval_s},"led":"{led}","firmware":"2.4.1"}}"#)
}

/// Returns the full `reported` section of sensor `n`, as a compact JSON object.
pub fn full_reported_json(n: u64) -> String {
    let bits = mix(n ^ 0x5EED);
    let door = if bits & 1 == 0 { "closed" } else { "open" };
    let building = bits % 12;
    let floor = (bits >> 8) % 9;
    let pressure = 990.0 + ((bits >> 16) % 400) as f64 / 10.0;
    let fixed = format!(r#""firmware":"2.4.1","status":"ok","door":"{door}""#);
    let location = format!(r#""location":"building-{building}/floor-{floor}""#);
    format!(
        r#"{{{},"pressure":{pressure:.1},{fixed},{location}}}"#,
        readings(n, 0)
    )
}

/// Returns a periodic reading of sensor `n`: the `reported` section with four changed numbers.
pub fn reading_json(n: u64, sequence: u64) -> String {
    format!("{{{}}}", readings(n, sequence))
}

/// Returns the four fields that change with each reading, without braces.
fn readings(n: u64, sequence: u64) -> String {
    let bits = mix(n.wrapping_mul(0x1_0000_0001) ^ sequence);
    let temperature = 15.0 + (bits % 1500) as f64 / 100.0;
    let humidity = 30.0 + ((bits >> 12) % 400) as f64 / 10.0;
    let battery = 100 - (bits >> 24) % 60;
    let rssi = -40 - ((bits >> 32) % 50) as i64;
    let climate = format!(r#""temperature":{temperature:.2},"humidity":{humidity:.1}"#);
    format!(r#"{climate},"battery":{battery},"rssi":{rssi}"#)
}

/// Returns a client token of 8 hex digits, like those device SDKs generate.
pub fn client_token(n: u64, sequence: u64) -> String {
    format!("{:08x}", mix(n ^ sequence.rotate_left(32)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_state_is_about_200_bytes() {
        for n in [0, 1, 999_999] {
            let bytes = desired_json(n).len() + full_reported_json(n).len();
            assert!((180..=240).contains(&bytes), "sensor {n}: {bytes} bytes");
        }
    }

    #[test]
    fn sections_are_json_objects() {
        for text in [desired_json(7), full_reported_json(7), reading_json(7, 3)] {
            let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert!(value.is_object(), "{text}");
        }
    }

    #[test]
    fn readings_vary_with_sequence() {
        assert_ne!(reading_json(7, 1), reading_json(7, 2));
        assert_eq!(reading_json(7, 1), reading_json(7, 1));
    }

    #[test]
    fn thing_names_sort_by_number() {
        assert_eq!(thing_name(42), "sensor-0000042");
        assert!(thing_name(9) < thing_name(10));
    }
}
