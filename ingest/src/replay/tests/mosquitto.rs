//! A private mosquitto broker for one test, on a free loopback port.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Maximum time for mosquitto to accept TCP connections after it starts.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A mosquitto process that is killed, by its PID, when the value is dropped.
pub struct Mosquitto {
    child: Child,
    port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto on 127.0.0.1 with anonymous access, no persistence and unlimited
    /// queues, so a burst of QoS 1 messages to a slow subscriber is not dropped.
    ///
    /// # Panics
    ///
    /// Panics if mosquitto is not installed or does not start listening in time.
    pub fn start() -> Self {
        let binary = find_mosquitto().unwrap_or_else(|| {
            panic!("mosquitto not found on PATH or in /usr/sbin; install it with `apt-get install -y mosquitto`")
        });
        let port = free_port();
        let dir = tempfile::tempdir().expect("temporary folder for mosquitto");
        let config_path = dir.path().join("mosquitto.conf");
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nset_tcp_nodelay true\nlog_dest stderr\n"
        );
        std::fs::write(&config_path, config).expect("write mosquitto config");

        let log_path = dir.path().join("mosquitto.log");
        let log = File::create(&log_path).expect("create mosquitto log");
        let log_for_stdout = log.try_clone().expect("clone mosquitto log handle");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", binary.display()));

        let mut broker = Self {
            child,
            port,
            log_path,
            _dir: dir,
        };
        broker.wait_until_listening();
        broker
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn wait_until_listening(&mut self) {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mosquitto exited with {status} before listening; log:\n{}",
                    self.log()
                );
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                panic!(
                    "mosquitto did not listen on port {} within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker now. `Child::kill` signals this child's PID only.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Returns the broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_mosquitto() -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .iter()
        .map(PathBuf::as_path)
        .chain([Path::new("/usr/sbin"), Path::new("/usr/local/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
}

/// Returns a loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener
        .local_addr()
        .expect("listener has an address")
        .port()
}
