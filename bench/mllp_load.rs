//! MLLP load client: N connections, each sending messages one at a time (send → wait for the
//! ACK, as real senders do), reporting throughput and send→ACK latency percentiles.
//!
//! ```text
//! cargo run --release --example mllp_load -- --addr 127.0.0.1:2575 --connections 8 --messages 40000
//! cargo run --release --example mllp_load -- --template tests/golden/oru_r01_lab.hl7 …
//! ```
//! Messages come from a template file (default `tests/golden/adt_a01.hl7`); each copy gets a
//! unique MSH-10, its own visit (PV1-19) and order (ORC-3/OBR-3) numbers, and one of 1,000 patient ids in PID-3, so duplicates detection and per-patient
//! ordering see realistic keys. Loopback addresses only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    addr: SocketAddr,
    connections: usize,
    messages: usize,
    template: String,
    warmup: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:2575".parse().map_err(|e| format!("{e}"))?,
        connections: 8,
        messages: 20_000,
        template: "tests/golden/adt_a01.hl7".into(),
        warmup: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--addr" => a.addr = v.parse().map_err(|e| format!("--addr {v}: {e}"))?,
            "--connections" => {
                a.connections = v.parse().map_err(|e| format!("--connections: {e}"))?
            }
            "--messages" => a.messages = v.parse().map_err(|e| format!("--messages: {e}"))?,
            "--template" => a.template = v,
            "--warmup" => a.warmup = v.parse().map_err(|e| format!("--warmup: {e}"))?,
            o => return Err(format!("unknown option {o}")),
        }
    }
    if !a.addr.ip().is_loopback() {
        return Err("only loopback addresses are allowed".into());
    }
    Ok(a)
}

/// Split the template into segments and return a closure producing message `n`.
fn generator(path: &str) -> Result<impl Fn(usize) -> Vec<u8> + Clone + use<>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let segs: Vec<String> = text
        .split(['\r', '\n'])
        .filter(|s| !s.trim().is_empty())
        .map(String::from)
        .collect();
    if segs.first().is_none_or(|s| !s.starts_with("MSH")) {
        return Err(format!("{path}: does not start with MSH"));
    }
    let run = std::process::id();
    Ok(move |n: usize| {
        let mut out = String::with_capacity(text.len() + 32);
        for s in &segs {
            let mut f: Vec<String> = s.split('|').map(String::from).collect();
            if f[0] == "MSH" && f.len() > 9 {
                f[9] = format!("LOAD{run}-{n}");
            }
            if f[0] == "PID" && f.len() > 3 {
                f[3] = format!("{}^^^HOSP^MR", 100_000 + n % 1000);
            }
            // A new visit / order per message: new Encounter, DiagnosticReport and Observation
            // resources (versions and index rows) each time, as in a live feed.
            if f[0] == "PV1" && f.len() > 19 {
                f[19] = format!("V{run}-{n}");
            }
            if (f[0] == "OBR" || f[0] == "ORC") && f.len() > 3 {
                f[3] = format!("F{run}-{n}");
            }
            out.push_str(&f.join("|"));
            out.push('\r');
        }
        out.into_bytes()
    })
}

async fn connection(
    addr: SocketAddr,
    ids: Vec<usize>,
    make: impl Fn(usize) -> Vec<u8>,
) -> Result<(Vec<Duration>, [usize; 3]), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut lat = Vec::with_capacity(ids.len());
    let mut codes = [0usize; 3];
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    for n in ids {
        let msg = make(n);
        let mut frame = Vec::with_capacity(msg.len() + 3);
        frame.push(0x0b);
        frame.extend_from_slice(&msg);
        frame.extend_from_slice(&[0x1c, 0x0d]);
        let t = Instant::now();
        s.write_all(&frame).await.map_err(|e| e.to_string())?;
        let ack = loop {
            if let Some(end) = pending.iter().position(|&b| b == 0x1c) {
                let f: Vec<u8> = pending.drain(..(end + 2).min(pending.len())).collect();
                break f;
            }
            let k = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            if k == 0 {
                return Err("connection closed by the gateway".into());
            }
            pending.extend_from_slice(&buf[..k]);
        };
        lat.push(t.elapsed());
        let text = String::from_utf8_lossy(&ack);
        if text.contains("MSA|AA") || text.contains("MSA|CA") {
            codes[0] += 1;
        } else if text.contains("MSA|AE") || text.contains("MSA|CE") {
            codes[1] += 1;
        } else {
            codes[2] += 1;
        }
    }
    Ok((lat, codes))
}

async fn run(
    a: &Args,
    ids: std::ops::Range<usize>,
) -> Result<(Duration, Vec<Duration>, [usize; 3]), String> {
    let make = generator(&a.template)?;
    let all: Vec<usize> = ids.collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let mine: Vec<usize> = all.iter().copied().skip(c).step_by(a.connections).collect();
        let make = make.clone();
        let addr = a.addr;
        tasks.push(tokio::spawn(
            async move { connection(addr, mine, make).await },
        ));
    }
    let mut lat = Vec::new();
    let mut codes = [0usize; 3];
    for t in tasks {
        let (l, c) = t.await.map_err(|e| e.to_string())??;
        lat.extend(l);
        for i in 0..3 {
            codes[i] += c[i];
        }
    }
    Ok((started.elapsed(), lat, codes))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mllp_load: {e}");
            std::process::exit(2);
        }
    };
    let base = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as usize
        % 100_000)
        * 1_000_000;
    if a.warmup > 0
        && let Err(e) = run(&a, base..base + a.warmup).await
    {
        eprintln!("mllp_load: warm-up: {e}");
        std::process::exit(1);
    }
    let start = base + a.warmup;
    match run(&a, start..start + a.messages).await {
        Ok((elapsed, mut lat, codes)) => {
            lat.sort();
            let rate = lat.len() as f64 / elapsed.as_secs_f64();
            println!(
                "connections={} messages={} elapsed={:.2}s rate={:.0} msg/s p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms AA/CA={} AE/CE={} AR/CR={}",
                a.connections,
                lat.len(),
                elapsed.as_secs_f64(),
                rate,
                pct(&lat, 0.50),
                pct(&lat, 0.90),
                pct(&lat, 0.99),
                pct(&lat, 0.999),
                pct(&lat, 1.0),
                codes[0],
                codes[1],
                codes[2]
            );
            if codes[0] != lat.len() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("mllp_load: {e}");
            std::process::exit(1);
        }
    }
}
