//! `docker-compose.yml` is checked with the real `docker-compose config` (Debian package
//! `docker-compose`, installed by `.ci/run`; no Docker engine is needed): it must be valid, wire
//! the gateway to PostgreSQL and the upstream FHIR server with healthchecks, and the gateway's
//! environment there must be a configuration the gateway accepts.

mod gateway;

use std::collections::BTreeMap;

/// `service → (key → value)` of the `environment:` blocks in `docker-compose config` output.
fn environments(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut in_services = false;
    let mut service = String::new();
    let mut in_env = false;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if indent == 0 {
            in_services = t == "services:";
            in_env = false;
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            service = t.trim_end_matches(':').to_string();
            in_env = false;
        } else if indent == 4 {
            in_env = t == "environment:";
        } else if in_env
            && indent == 6
            && let Some((k, v)) = t.split_once(": ")
        {
            out.entry(service.clone()).or_default().insert(
                k.to_string(),
                v.trim_matches('\'').trim_matches('"').to_string(),
            );
        }
    }
    out
}

#[test]
fn docker_compose_config_is_valid_and_wired() {
    let out = match std::process::Command::new("docker-compose")
        .arg("-f")
        .arg(gateway::root().join("docker-compose.yml"))
        .arg("config")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "docker-compose could not run ({e}) but CI is set: .ci/run installs it"
            );
            eprintln!(
                "note: docker-compose not installed (apt-get install docker-compose); CI runs this test"
            );
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docker-compose config failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let envs = environments(&text);
    for s in ["db", "hapi", "hapi-health", "gateway"] {
        assert!(
            text.contains(&format!("\n  {s}:\n")),
            "service {s} missing:\n{text}"
        );
    }
    // Healthchecks: PostgreSQL and the gateway; the gateway waits for a healthy database.
    assert!(text.contains("pg_isready"), "{text}");
    assert!(text.contains("http://127.0.0.1:8080/health"), "{text}");
    assert!(text.contains("http://hapi:8080/fhir/metadata"), "{text}");
    assert!(text.contains("condition: service_healthy"), "{text}");
    // The gateway's environment is a configuration it accepts, pointing at the other services.
    let gw = envs
        .get("gateway")
        .unwrap_or_else(|| panic!("no gateway environment in:\n{text}"));
    let cfg = v2fhir::serve::Config::load(None, gw.iter().map(|(k, v)| (k.clone(), v.clone())))
        .unwrap_or_else(|e| panic!("the compose gateway environment is refused: {e}"));
    assert_eq!(cfg.sink.mode, "both");
    assert!(cfg.store.url.starts_with("postgres://") && cfg.store.url.contains("@db:5432/"));
    assert_eq!(cfg.upstream.url, "http://hapi:8080/fhir");
    let hapi = envs
        .get("hapi")
        .unwrap_or_else(|| panic!("no hapi environment"));
    assert!(
        hapi.get("SPRING_DATASOURCE_URL")
            .is_some_and(|u| u.starts_with("jdbc:postgresql://db:5432/")),
        "{hapi:?}"
    );
}
