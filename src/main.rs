//! The `v2fhir` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use v2fhir::v2::{self, ParseOptions, Structures, ack};

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

#[derive(Subcommand)]
enum Command {
    /// Parse a file of HL7 v2 messages (single, concatenated or batch) and print the model as JSON.
    /// Exits non-zero only when no usable MSH is found.
    Parse(InputArgs),
    /// Print the acknowledgment (ER7) the gateway would send for each message in the input.
    Ack(InputArgs),
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
        Err(e) => {
            eprintln!("v2fhir: {e:#}");
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
                    eprintln!("v2fhir: {}: {e}", args.input.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Ack(args) => {
            let input = read_input(&args.input)?;
            let opts = || ack::AckOptions {
                control_id: v2fhir::clock::next_control_id(),
                timestamp: v2fhir::clock::hl7_now(),
                max_errors: 20,
            };
            match v2::parse_with(&input, &options(&args)?) {
                Ok(parsed) => {
                    for msg in &parsed.messages {
                        let mut extra = v2::json::escape_diagnostics(msg);
                        extra.extend(Structures::builtin().group(msg).diagnostics);
                        let plan = ack::plan(msg, &extra);
                        if !plan.send {
                            eprintln!(
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
                    eprintln!("v2fhir: {}: {e}", args.input.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
