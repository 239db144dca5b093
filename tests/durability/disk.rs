//! A small tmpfs to fill up, and the steps of the full-disk test: updates until the service
//! rejects them with 503, and updates until it accepts them again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::ledger::{Ledger, Outcome, ShadowId};
use crate::load::{http_delete, http_update, mqtt_update};
use crate::support::{Device, Http};

/// Bytes of padding in each update while the disk is full, so the log fills quickly.
const FULL_DISK_PADDING: usize = 4000;

/// Maximum number of updates sent on the full disk while waiting for the first 503.
const MAX_UPDATES_ON_FULL_DISK: usize = 200;

/// Updates sent after the first 503, all of which must be rejected too.
const UPDATES_AFTER_FIRST_REJECTION: usize = 10;

/// How long the service may take to accept updates again once space returns.
const RECOVERY_AFTER_SPACE_RETURNS: Duration = Duration::from_secs(10);

/// errno of "No space left on device" on Linux.
const ENOSPC: i32 = 28;

/// A tmpfs mounted on a temporary directory, unmounted when dropped, also after a panic.
pub struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size_mib` MiB.
    ///
    /// # Panics
    ///
    /// Panics, naming the missing privilege, when the mount fails.
    pub fn new(size_mib: u64) -> TmpfsMount {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "mounting a {size_mib} MiB tmpfs at {} failed ({}): this test needs root or \
             CAP_SYS_ADMIN to mount a tmpfs; run it as root",
            dir.path().display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        TmpfsMount { dir }
    }

    /// Mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the bytes available to unprivileged users on the tmpfs.
    pub fn available_bytes(&self) -> u64 {
        let output = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(self.path())
            .output()
            .expect("run stat");
        let text = String::from_utf8_lossy(&output.stdout);
        let numbers: Vec<u64> = text
            .split_whitespace()
            .filter_map(|number| number.parse().ok())
            .collect();
        assert_eq!(numbers.len(), 2, "unexpected output of stat -f: {text}");
        numbers[0] * numbers[1]
    }

    /// Fills the tmpfs with a filler file until writes fail with ENOSPC, in ever smaller chunks
    /// so that hardly a byte is left.
    pub fn fill(&self) -> Filler {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler file");
        let mut written = 0;
        for chunk_size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
            let chunk = vec![0xA5_u8; chunk_size];
            // Each size runs until ENOSPC. The bound only guards against a file system that
            // never fills.
            for _ in 0..1024 {
                match file.write(&chunk) {
                    Ok(0) => break,
                    Ok(count) => written += count as u64,
                    Err(error) if error.raw_os_error() == Some(ENOSPC) => break,
                    Err(error) => panic!("writing the filler file failed: {error}"),
                }
            }
        }
        println!(
            "full disk: filler of {written} bytes leaves {} bytes",
            self.available_bytes()
        );
        Filler { path }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // A lazy unmount detaches the tmpfs even while a process still has a file open.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// The file that fills the tmpfs.
pub struct Filler {
    path: PathBuf,
}

impl Filler {
    /// Deletes the filler, so space returns.
    pub fn remove(self) {
        std::fs::remove_file(&self.path).expect("remove the filler file");
    }
}

/// The clients of the full-disk test: an HTTP app and an MQTT device with one shadow each.
pub struct DiskClients<'a> {
    /// Ledger of every request.
    pub ledger: &'a Ledger,
    /// Client of the HTTP API.
    pub http: &'a Http,
    /// Device subscribed to the responses of `mqtt_shadow`.
    pub device: &'a Device,
    /// Shadow that the HTTP app updates.
    pub http_shadow: &'a ShadowId,
    /// Shadow that the device updates.
    pub mqtt_shadow: &'a ShadowId,
    /// Start of the service, counting from 1.
    pub generation: u32,
}

impl DiskClients<'_> {
    /// Sends padded updates, alternately over HTTP and MQTT, until one gets 503, then
    /// [`UPDATES_AFTER_FIRST_REJECTION`] more and a delete, which must all get 503 too. Returns
    /// the violations.
    pub fn update_until_rejected(&self, mount: &TmpfsMount) -> Vec<String> {
        let mut violations = Vec::new();
        let mut first_rejection = None;
        let mut rejected = [0, 0];
        for attempt in 0..MAX_UPDATES_ON_FULL_DISK {
            if first_rejection.is_some_and(|first| attempt > first + UPDATES_AFTER_FIRST_REJECTION)
            {
                break;
            }
            let over_http = attempt % 2 == 0;
            let response = if over_http {
                self.http_update(FULL_DISK_PADDING)
            } else {
                self.mqtt_update(FULL_DISK_PADDING)
            };
            violations.extend(response.violations);
            match response.outcome {
                Outcome::Rejected { code: 503 } => {
                    first_rejection.get_or_insert(attempt);
                    rejected[usize::from(!over_http)] += 1;
                }
                Outcome::Accepted { version } if first_rejection.is_some() => {
                    violations.push(format!(
                        "update {} was accepted with version {version} after an earlier one \
                         got 503, with {} bytes available",
                        response.token,
                        mount.available_bytes()
                    ));
                }
                Outcome::Accepted { .. } => {}
                outcome => violations.push(format!(
                    "update {} on a full disk got {outcome:?}, expected 503",
                    response.token
                )),
            }
        }

        let [rejected_http, rejected_mqtt] = rejected;
        println!(
            "full disk, generation {}: {} updates fitted, then {rejected_http} HTTP and \
             {rejected_mqtt} MQTT updates got 503",
            self.generation,
            first_rejection.unwrap_or(MAX_UPDATES_ON_FULL_DISK)
        );
        if first_rejection.is_none() {
            violations.push(format!(
                "no update got 503 in {MAX_UPDATES_ON_FULL_DISK} updates of {FULL_DISK_PADDING} \
                 bytes on a full disk"
            ));
            return violations;
        }
        if rejected_http == 0 || rejected_mqtt == 0 {
            violations.push(format!(
                "503s on a full disk: {rejected_http} over HTTP and {rejected_mqtt} over MQTT; \
                 expected both"
            ));
        }

        // A delete is rejected too, unless its small log record still fits in the space left,
        // for example in the last page of the log segment. An accepted delete must then survive
        // the next crash like any acknowledged change, which the restart checks.
        let response = http_delete(
            self.http,
            self.ledger,
            "app",
            self.http_shadow,
            self.generation,
        )
        .unwrap_or_else(|error| panic!("delete over HTTP on a full disk failed: {error}"));
        violations.extend(response.violations);
        match response.outcome {
            Outcome::Rejected { code: 503 } => {}
            Outcome::Accepted { version } => println!(
                "full disk, generation {}: delete {} fitted and was accepted at version {version}",
                self.generation, response.token
            ),
            outcome => violations.push(format!(
                "delete {} on a full disk got {outcome:?}, expected 503",
                response.token
            )),
        }
        violations
    }

    /// Sends updates over HTTP until one is accepted, at most
    /// [`RECOVERY_AFTER_SPACE_RETURNS`] after space returned, then one over MQTT, which must
    /// be accepted too. Returns the violations.
    pub fn update_until_accepted(&self) -> Vec<String> {
        let mut violations = Vec::new();
        let space_returned = Instant::now();
        let mut accepted = false;
        while !accepted && space_returned.elapsed() < RECOVERY_AFTER_SPACE_RETURNS {
            let response = self.http_update(0);
            violations.extend(response.violations);
            accepted = matches!(response.outcome, Outcome::Accepted { .. });
            if !accepted {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if !accepted {
            violations.push(format!(
                "no update accepted within {RECOVERY_AFTER_SPACE_RETURNS:?} after space returned"
            ));
            return violations;
        }
        println!(
            "full disk, generation {}: accepted again {} ms after space returned",
            self.generation,
            space_returned.elapsed().as_millis()
        );

        let response = self.mqtt_update(0);
        violations.extend(response.violations);
        if !matches!(response.outcome, Outcome::Accepted { .. }) {
            violations.push(format!(
                "update {} over MQTT after space returned got {:?}",
                response.token, response.outcome
            ));
        }
        violations
    }

    fn http_update(&self, padding: usize) -> crate::load::Response {
        http_update(
            self.http,
            self.ledger,
            "app",
            self.http_shadow,
            self.generation,
            padding,
        )
        .unwrap_or_else(|error| panic!("update over HTTP failed: {error}"))
    }

    fn mqtt_update(&self, padding: usize) -> crate::load::Response {
        mqtt_update(
            self.device,
            self.ledger,
            "device",
            self.mqtt_shadow,
            self.generation,
            padding,
        )
    }
}
