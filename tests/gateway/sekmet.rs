//! A real upstream FHIR R4 server for the forwarding tests: `sekmet-fhir` (PyPI, SQLite-backed,
//! installed by `.ci/run`), started per test on a free loopback port with its own data directory,
//! strict inbound validation and the simulator off. It can be stopped and started again on the
//! same port and data (the outage test).

use std::path::{Path, PathBuf};

/// Is the `sekmet` command there? In CI it must be (fail rather than skip).
pub fn available() -> bool {
    let ok = std::process::Command::new("sekmet")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "`sekmet --version` failed but CI is set: .ci/run installs sekmet-fhir"
        );
        eprintln!(
            "note: sekmet-fhir not installed (pip install sekmet-fhir==0.1.1); test not run here, CI runs it"
        );
    }
    ok
}

/// A free loopback port (bound and released; sekmet binds it right after).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

/// A sekmet server.
pub struct Sekmet {
    /// Its data directory (settings, database, log).
    pub dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<tokio::process::Child>,
}

impl Sekmet {
    /// Start one with `extra` appended to its settings.yaml (e.g. `server_auth:`), and wait
    /// until `GET /fhir/metadata` answers.
    pub async fn start(dir: &Path, extra: &str) -> Sekmet {
        let port = free_port();
        let settings = format!(
            "host: 127.0.0.1\nport: {port}\nbase_url: http://127.0.0.1:{port}/fhir\n\
             data_dir: {data}\nsimulator: {{enabled: false}}\nvalidation: {{inbound: strict}}\n\
             log_inbound: false\n{extra}",
            data = dir.join("data").display()
        );
        std::fs::write(dir.join("settings.yaml"), settings).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Sekmet {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        s.resume().await;
        s
    }

    /// `http://127.0.0.1:PORT/fhir`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/fhir", self.port)
    }

    /// Start (again) on the same port and data.
    pub async fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sekmet.log"))
            .unwrap_or_else(|e| panic!("{e}"));
        let log2 = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = tokio::process::Command::new("sekmet")
            .arg("serve")
            .arg("-c")
            .arg(self.dir.join("settings.yaml"))
            .current_dir(&self.dir)
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sekmet: {e}"));
        self.child = Some(child);
        let http = super::http_client();
        let url = format!("{}/metadata", self.base());
        for _ in 0..300 {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "sekmet did not answer {url} within 30 s; see {}",
            self.dir.join("sekmet.log").display()
        );
    }

    /// Stop gracefully (SIGTERM: uvicorn answers the requests in progress, then exits).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
            }
            match tokio::time::timeout(std::time::Duration::from_secs(20), c.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    let _ = c.kill().await;
                }
            }
        }
    }

    /// GET a path under the base and return the JSON.
    pub async fn get(&self, path_and_query: &str) -> serde_json::Value {
        let url = format!("{}/{path_and_query}", self.base());
        let r = super::http_client()
            .get(&url)
            .header("accept", "application/fhir+json")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {url}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
    }

    /// `total` of a search or history (`_summary=count` where the server allows it).
    pub async fn total(&self, path_and_query: &str) -> i64 {
        let v = self.get(path_and_query).await;
        v["total"]
            .as_i64()
            .unwrap_or_else(|| panic!("{path_and_query}: no total in {v}"))
    }
}

impl Drop for Sekmet {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}
