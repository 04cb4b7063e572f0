//! The `v2fhir` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use v2fhir::sources::mllp::{Frame, MllpCodec};
use v2fhir::v2::{self, ParseOptions, Structures, ack};

/// Like `eprintln!`, but a closed stderr is not a panic.
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// mimalloc: conversion allocates many small JSON nodes; it is ~30% faster than glibc malloc here
/// (`cargo bench --bench convert`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "v2fhir", version, about = "HL7 v2 → FHIR R4 gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct InputArgs {
    /// File to read, or `-` for standard input.
    input: PathBuf,
    /// Decoder for bytes that are not valid in the declared character set (a WHATWG label).
    #[arg(long, default_value = "windows-1252", env = "V2FHIR_FALLBACK_CHARSET")]
    fallback_charset: String,
}

#[derive(clap::Args)]
struct MappingArgs {
    /// The mapping set directory.
    #[arg(long, default_value = "mappings", env = "V2FHIR_MAPPINGS")]
    mappings: PathBuf,
}

#[derive(clap::Args)]
struct AckArgs {
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    mapping: MappingArgs,
}

#[derive(Subcommand)]
enum MappingsCommand {
    /// Load, validate and compile the mapping set; list every error as file:line:col.
    Check(MappingArgs),
    /// Run the `tests:` blocks of the message maps.
    Test(MappingArgs),
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Files or directories (all *.hl7 inside, recursively), or `-` for standard input.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    mapping: MappingArgs,
    /// Bundle type: transaction, batch, collection or message.
    #[arg(long, default_value = "transaction")]
    bundle_type: String,
    /// IANA zone for date-times without an offset.
    #[arg(long, default_value = "UTC", env = "V2FHIR_DEFAULT_ZONE")]
    zone: String,
    /// Print one JSON object per line ({"bundle": …, "outcome": …}) instead of pretty bundles.
    #[arg(long)]
    ndjson: bool,
    /// Skip R4 validation (not recommended).
    #[arg(long)]
    no_validate: bool,
    /// At the end, on stderr: how often each segment, field and component went unmapped, and
    /// each code no vocabulary translated, over all the messages (what a feed sends that the
    /// mappings and vocabularies do not cover yet).
    #[arg(long)]
    loss_summary: bool,
    /// Which rule wrote each element, and what it read: with --ndjson a `trace` array in each
    /// line, otherwise lines on stderr after each message (no values: look them up in the
    /// Bundle by resource and path).
    #[arg(long)]
    trace: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (every setting has a default; see README "Configuration").
    #[arg(long, env = "V2FHIR_CONFIG")]
    config: Option<PathBuf>,
    /// MLLP listen address (overrides the file and V2FHIR_MLLP_LISTEN); empty disables MLLP.
    #[arg(long)]
    mllp: Option<String>,
    /// HTTP listen address (overrides the file and V2FHIR_HTTP_LISTEN); empty disables HTTP.
    #[arg(long)]
    http: Option<String>,
    /// Store URL: sqlite://FILE or postgres://… (overrides V2FHIR_STORE_URL).
    #[arg(long)]
    store: Option<String>,
    /// Mapping directory (overrides V2FHIR_MAPPINGS_DIR).
    #[arg(long)]
    mappings: Option<PathBuf>,
    /// Where converted messages go: local (resource store + /fhir facade), upstream (forward to
    /// --upstream-url; /fhir proxies to it) or both (overrides V2FHIR_SINK).
    #[arg(long, value_parser = ["local", "upstream", "both"])]
    sink: Option<String>,
    /// Base URL of the upstream FHIR server (overrides V2FHIR_UPSTREAM_URL).
    #[arg(long)]
    upstream_url: Option<String>,
    /// Check everything the settings name — the settings themselves, the mapping set, TLS
    /// certificates and keys, the tokens file, the JWKS, the file source's directories — list
    /// every problem, and exit (0 when all is well) without starting anything.
    #[arg(long)]
    check: bool,
}

#[derive(clap::Args)]
struct SendArgs {
    /// Files or directories (all *.hl7 inside) to send, one MLLP frame per message.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The MLLP listener.
    #[arg(long, default_value = "127.0.0.1:2575")]
    to: String,
    /// Seconds to wait for each acknowledgment.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: MLLP on 127.0.0.1:2575, HTTP on 127.0.0.1:8080, SQLite under ./data/.
    Serve(ServeArgs),
    /// Send messages to an MLLP listener (this gateway or any other) and print each
    /// acknowledgment. Exits 1 when any message is not accepted or not answered.
    Send(SendArgs),
    /// Parse a file of HL7 v2 messages (single, concatenated or batch) and print the model as JSON.
    /// Exits non-zero only when no usable MSH is found.
    Parse(InputArgs),
    /// Print the acknowledgment (ER7) the gateway would send for each message in the input:
    /// parse, convert with the mapping set, and acknowledge (AE with ERR when conversion fails).
    Ack(AckArgs),
    /// Convert HL7 v2 messages to FHIR R4 bundles. Exits non-zero when any message fails.
    Convert(ConvertArgs),
    /// Work with the mapping set.
    #[command(subcommand)]
    Mappings(MappingsCommand),
}

fn read_input(path: &PathBuf) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

fn options(args: &InputArgs) -> Result<ParseOptions> {
    let enc =
        encoding_rs::Encoding::for_label(args.fallback_charset.as_bytes()).with_context(|| {
            format!(
                "--fallback-charset '{}' is not a known encoding label",
                args.fallback_charset
            )
        })?;
    Ok(ParseOptions {
        fallback_charset: enc,
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        // The reader went away (`v2fhir convert … | head`): not an error worth a message.
        Err(e)
            if e.chain().any(|c| {
                let kind = c
                    .downcast_ref::<std::io::Error>()
                    .map(std::io::Error::kind)
                    .or_else(|| {
                        c.downcast_ref::<serde_json::Error>()
                            .and_then(serde_json::Error::io_error_kind)
                    });
                kind == Some(std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("v2fhir: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Parse(args) => {
            let input = read_input(&args.input)?;
            match v2::parse_with(&input, &options(&args)?) {
                Ok(parsed) => {
                    let j = v2::json::parsed_json(&parsed, Structures::builtin());
                    serde_json::to_writer_pretty(&mut out, &j)?;
                    writeln!(out)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    let j = serde_json::json!({ "messages": [], "error": e.to_string(), "diagnostics": e.diagnostics() });
                    serde_json::to_writer_pretty(&mut out, &j)?;
                    writeln!(out)?;
                    say!("v2fhir: {}: {e}", args.input.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Mappings(MappingsCommand::Check(a)) => {
            let plan = load_plan(&a.mappings)?;
            let rules: usize = plan.maps.iter().map(|m| m.rules.len()).sum();
            println!(
                "{}: {} message maps, {} segment/datatype maps ({} rules), {} vocabularies, {} sender overlays — OK",
                a.mappings.display(),
                plan.messages.len(),
                plan.maps.len(),
                rules,
                plan.vocabs.len(),
                plan.senders.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Mappings(MappingsCommand::Test(a)) => {
            let plan = load_plan(&a.mappings)?;
            let base = a.mappings.parent().map(PathBuf::from).unwrap_or_default();
            let report = v2fhir::mapping::tests::run_all(&plan, &base);
            for line in &report.lines {
                println!("{line}");
            }
            println!("{} passed, {} failed", report.passed, report.failed);
            Ok(if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Convert(a) => convert(a, &mut out),
        Command::Serve(a) => serve(a),
        Command::Send(a) => send(a, &mut out),
        Command::Ack(AckArgs {
            input: args,
            mapping,
        }) => {
            let input = read_input(&args.input)?;
            let mapping_plan = load_plan(&mapping.mappings)?;
            let opts = || ack::AckOptions {
                control_id: v2fhir::clock::next_control_id(),
                timestamp: v2fhir::clock::hl7_now(),
                max_errors: 20,
            };
            match v2::parse_with(&input, &options(&args)?) {
                Ok(parsed) => {
                    for msg in &parsed.messages {
                        let conv = v2fhir::mapping::eval::convert(
                            &mapping_plan,
                            msg,
                            &v2fhir::mapping::eval::ConvertOptions::default(),
                        );
                        // The same decision the gateway makes (parse, grouping, escapes, mapping).
                        let plan = v2fhir::ingest::ack_plan(msg, &conv);
                        if !plan.send {
                            say!(
                                "v2fhir: message {} asks for no {} acknowledgment (MSH-15); shown anyway",
                                msg.header().control_id.as_deref().unwrap_or(""),
                                plan.code.as_str()
                            );
                        }
                        let text = ack::build(msg, &plan, &opts());
                        // ER7 uses CR; print one segment per line for terminals.
                        writeln!(out, "{}", text.trim_end_matches('\r').replace('\r', "\n"))?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    let text = ack::reject_unparsable(&e.to_string(), &opts());
                    writeln!(out, "{}", text.trim_end_matches('\r').replace('\r', "\n"))?;
                    say!("v2fhir: {}: {e}", args.input.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Read the next acknowledgment frame from `s` with the gateway's own MLLP codec.
fn read_frame(
    s: &mut std::net::TcpStream,
    codec: &mut MllpCodec,
    buf: &mut bytes::BytesMut,
) -> std::io::Result<Vec<u8>> {
    use tokio_util::codec::Decoder;
    loop {
        while let Some(frame) = codec.decode(buf)? {
            // Oversized or abandoned frames are not acknowledgments: keep reading.
            if let Frame::Message(m) = frame {
                return Ok(m.to_vec());
            }
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the listener closed the connection",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// MSA-1 of an acknowledgment, read with the v2 parser.
fn ack_code(ack: &[u8]) -> Option<String> {
    let parsed = v2::parse(ack).ok()?;
    let msg = parsed.messages.first()?;
    let msa = msg.segments().find(|s| s.id() == "MSA")?;
    msa.field(1).text().map(|t| t.into_owned())
}

fn send(a: SendArgs, out: &mut impl Write) -> Result<ExitCode> {
    use std::time::Duration;
    let mut files = Vec::new();
    for p in &a.inputs {
        collect_inputs(p, &mut files)?;
    }
    let mut stream =
        std::net::TcpStream::connect(&a.to).with_context(|| format!("connecting to {}", a.to))?;
    let _ = stream.set_nodelay(true);
    let mut codec = MllpCodec::new(64 * 1024 * 1024);
    let mut pending = bytes::BytesMut::new();
    let (mut sent, mut failed) = (0usize, 0usize);
    for f in &files {
        let bytes = read_input(f)?;
        // One frame per message; input that does not parse is sent as it is (and rejected).
        let frames: Vec<(Vec<u8>, bool)> = match v2::parse(&bytes) {
            Ok(p) if !p.messages.is_empty() => p
                .messages
                .iter()
                .map(|m| (m.raw().to_vec(), m.header().enhanced_mode()))
                .collect(),
            _ => vec![(bytes.clone(), false)],
        };
        for (msg, enhanced) in frames {
            let mut frame = bytes::BytesMut::with_capacity(msg.len() + 3);
            tokio_util::codec::Encoder::encode(&mut codec, &msg, &mut frame)?;
            stream
                .write_all(&frame)
                .with_context(|| format!("sending {}", f.display()))?;
            sent += 1;
            let mut acks = Vec::new();
            stream.set_read_timeout(Some(Duration::from_secs(a.timeout.max(1))))?;
            match read_frame(&mut stream, &mut codec, &mut pending) {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    failed += 1;
                    say!("v2fhir: {}: no acknowledgment ({e})", f.display());
                    continue;
                }
            }
            if enhanced {
                // A commit ACK may be followed by the application ACK.
                stream.set_read_timeout(Some(Duration::from_millis(300)))?;
                if let Ok(ack) = read_frame(&mut stream, &mut codec, &mut pending) {
                    acks.push(ack);
                }
            }
            for ack in acks {
                let accepted = ack_code(&ack).is_some_and(|c| c == "AA" || c == "CA");
                let text = String::from_utf8_lossy(&ack);
                if !accepted {
                    failed += 1;
                }
                writeln!(out, "{}", text.trim_end_matches('\r').replace('\r', "\n"))?;
            }
        }
    }
    say!(
        "v2fhir: {sent} message(s) sent to {}, {failed} not accepted or not answered",
        a.to
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    let mut cfg = if a.check {
        v2fhir::serve::Config::read(a.config.as_deref(), std::env::vars())?
    } else {
        v2fhir::serve::Config::load(a.config.as_deref(), std::env::vars())?
    };
    if let Some(m) = a.mllp {
        cfg.mllp.listen = m;
    }
    if let Some(h) = a.http {
        cfg.http.listen = h;
    }
    if let Some(s) = a.store {
        cfg.store.url = s;
    }
    if let Some(m) = a.mappings {
        cfg.mappings.dir = m;
    }
    if let Some(s) = a.sink {
        cfg.sink.mode = s;
    }
    if let Some(u) = a.upstream_url {
        cfg.upstream.url = u;
    }
    if a.check {
        let problems = v2fhir::serve::preflight(&cfg);
        for p in &problems {
            say!("v2fhir: {p}");
        }
        if problems.is_empty() {
            println!("v2fhir: configuration, mappings and the files they name are usable");
            return Ok(ExitCode::SUCCESS);
        }
        return Ok(ExitCode::from(1));
    }
    cfg.check()?;
    v2fhir::serve::init_logging(&cfg.log);
    let cfg_sink = cfg.sink.mode.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("v2fhir-io")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let running = v2fhir::serve::start(&cfg).await?;
        // Machine-readable lines for scripts and tests (the addresses may be ephemeral ports).
        if let Some(a) = running.mllp_addr {
            println!("v2fhir: MLLP listening on {a}");
        }
        if let Some(a) = running.http_addr {
            println!("v2fhir: HTTP listening on {a}");
        }
        if let Some(u) = &running.upstream {
            println!(
                "v2fhir: forwarding to {} (sink {})",
                u.base_redacted(),
                cfg_sink
            );
        }
        println!(
            "v2fhir: store {} ready",
            match running.pipeline.store().backend() {
                v2fhir::store::Backend::Sqlite => "sqlite",
                v2fhir::store::Backend::Postgres => "postgres",
            }
        );
        let _ = std::io::stdout().flush();
        tracing::info!(mllp = ?running.mllp_addr, http = ?running.http_addr, "v2fhir serving");
        v2fhir::serve::signal().await;
        tracing::info!("shutting down: finishing in-flight messages");
        running.shutdown().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn load_plan(dir: &std::path::Path) -> Result<v2fhir::mapping::plan::Plan> {
    match v2fhir::mapping::load::load_dir(dir) {
        Ok(p) => Ok(p),
        Err(errors) => {
            for e in &errors {
                say!("{e}");
            }
            anyhow::bail!(
                "{} error(s) in the mapping set {}",
                errors.len(),
                dir.display()
            )
        }
    }
}

/// The `--loss-summary` text: whole segments, then fields, then the codes no vocabulary
/// translated, most frequent first.
fn loss_summary(
    lost: std::collections::HashMap<String, usize>,
    untranslated: std::collections::HashMap<String, usize>,
    messages: usize,
) -> String {
    let sorted = |m: std::collections::HashMap<String, usize>| {
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    let v = sorted(lost);
    let line = |segments: bool| {
        v.iter()
            .filter(|(k, _)| k.contains('-') != segments)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let codes = sorted(untranslated)
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "not mapped, over {messages} message(s) (occurrences):\n  segments: {}\n  fields:   {}\n  codes no vocabulary translated: {}",
        line(true),
        line(false),
        codes
    )
}

fn collect_inputs(p: &std::path::Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                collect_inputs(&e, out)?;
            } else if e.extension().is_some_and(|x| x == "hl7") {
                out.push(e);
            }
        }
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}

fn convert(a: ConvertArgs, out: &mut impl Write) -> Result<ExitCode> {
    use v2fhir::mapping::eval::{self, BundleType, ConvertOptions};
    let plan = load_plan(&a.mapping.mappings)?;
    let bundle_type = BundleType::from_name(&a.bundle_type).with_context(|| {
        format!(
            "--bundle-type '{}' is not transaction, batch, collection or message",
            a.bundle_type
        )
    })?;
    let zone = jiff::tz::TimeZone::get(&a.zone)
        .with_context(|| format!("--zone '{}' is not an IANA time zone", a.zone))?;
    let opts = ConvertOptions {
        bundle_type,
        default_zone: zone,
        validate: !a.no_validate,
        trace: a.trace,
    };
    let mut files = Vec::new();
    for i in &a.inputs {
        collect_inputs(i, &mut files)?;
    }
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut lost: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut untranslated: std::collections::HashMap<String, usize> =
        std::collections::HashMap::new();
    // A progress bar for many files, on a terminal only (never in pipes or CI logs).
    use std::io::IsTerminal;
    let bar = (files.len() > 20 && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(files.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} files  {elapsed_precise}  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    for f in &files {
        let bytes = read_input(f)?;
        let parsed = match v2::parse(&bytes) {
            Ok(p) => p,
            Err(e) => {
                say!("{}: {e}", f.display());
                failed += 1;
                continue;
            }
        };
        for (i, msg) in parsed.messages.iter().enumerate() {
            let c = eval::convert(&plan, msg, &opts);
            let label = format!("{} message {}", f.display(), i + 1);
            for issue in c
                .issues
                .iter()
                .filter(|x| x.severity >= v2::Severity::Warning)
            {
                let line = format!(
                    "{label}: {:?}: {}{}",
                    issue.severity,
                    issue.text,
                    issue
                        .location
                        .as_ref()
                        .map(|l| format!(" [{l}]"))
                        .unwrap_or_default()
                );
                match &bar {
                    Some(b) => b.println(line),
                    None => say!("{line}"),
                }
            }
            if c.failed() {
                failed += 1
            } else {
                ok += 1
            }
            if a.loss_summary {
                for u in &c.unmapped {
                    *lost.entry(u.clone()).or_default() += 1;
                }
                for u in &c.untranslated {
                    *untranslated.entry(u.clone()).or_default() += 1;
                }
            }
            if a.ndjson {
                let mut line = serde_json::json!({"source": label, "bundle": c.bundle, "outcome": c.outcome()});
                if a.trace {
                    line["trace"] = serde_json::to_value(&c.trace)?;
                }
                serde_json::to_writer(&mut *out, &line)?;
                writeln!(out)?;
            } else {
                if let Some(b) = &c.bundle {
                    serde_json::to_writer_pretty(&mut *out, b)?;
                    writeln!(out)?;
                }
                for row in &c.trace {
                    let line = format!(
                        "{label}: {} {}  ← {}  [{}]",
                        row.resource, row.path, row.source, row.rule
                    );
                    match &bar {
                        Some(b) => b.println(line),
                        None => say!("{line}"),
                    }
                }
            }
        }
        if let Some(b) = &bar {
            b.set_message(format!("{failed} failed"));
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if a.loss_summary {
        say!("{}", loss_summary(lost, untranslated, ok + failed));
    }
    say!("{ok} converted, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
