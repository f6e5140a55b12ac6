//! `tcpcrypt decrypt`: the file I/O around the tcpcrypt-decrypt library.
//! Reads the key log and the capture, writes the rewritten capture, prints
//! notes on standard error and, with `--summary`, one block per connection
//! on standard output.

use std::io::Write;

use tcpcrypt_decrypt::{
    Capture, ConnectionReport, DIRECTIONS, Decrypted, KeyLog, Outcome as ConnOutcome, decrypt, link,
};

use crate::cli::DecryptArgs;
use crate::exit::{Failure, Outcome};

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|e| Failure::Decrypt(format!("cannot read {what} {}: {e}", path.display())))
}

pub fn run(args: &DecryptArgs) -> Result<Outcome, Failure> {
    if args.output.is_none() && !args.summary {
        return Err(Failure::Usage(
            "give an OUTPUT capture file, or --summary (or both)".into(),
        ));
    }
    let keylog_bytes = read(&args.keylog, "key log")?;
    let keylog_text = String::from_utf8(keylog_bytes)
        .map_err(|_| Failure::Decrypt(format!("key log {} is not text", args.keylog.display())))?;
    let keylog = KeyLog::parse(&keylog_text)
        .map_err(|e| Failure::Decrypt(format!("{}: {e}", args.keylog.display())))?;
    if keylog.is_empty() {
        eprintln!(
            "tcpcrypt: warning: the key log {} holds no session",
            args.keylog.display()
        );
    }
    let capture_bytes = read(&args.input, "capture")?;
    let capture = Capture::read(&capture_bytes)
        .map_err(|e| Failure::Decrypt(format!("{}: {e}", args.input.display())))?;
    let mut complete = true;
    if let Some(damage) = &capture.damage {
        complete = false;
        eprintln!(
            "tcpcrypt: warning: {}: {damage}; only the {} records before it are used",
            args.input.display(),
            capture.records.len()
        );
    }
    if !link::supported(capture.linktype) {
        eprintln!(
            "tcpcrypt: warning: link type {} is not supported; the capture is copied unchanged",
            capture.linktype
        );
    }
    let result = decrypt(&capture, &keylog);
    for (n, conn) in result.connections.iter().enumerate() {
        complete &= conn.complete();
        report_problems(n + 1, conn);
    }
    if let Some(path) = &args.output {
        let bytes = result
            .output
            .to_pcap()
            .map_err(|e| Failure::Decrypt(e.to_string()))?;
        std::fs::write(path, bytes)
            .map_err(|e| Failure::Decrypt(format!("cannot write {}: {e}", path.display())))?;
    }
    if args.summary {
        print_summary(&result).map_err(Failure::Output)?;
    }
    Ok(if complete {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

fn name(n: usize, conn: &ConnectionReport) -> String {
    format!(
        "connection {n} {} -> {} (from record {})",
        conn.client, conn.server, conn.first_record
    )
}

fn report_problems(n: usize, conn: &ConnectionReport) {
    match &conn.outcome {
        ConnOutcome::Plain(_) => {}
        ConnOutcome::NotDecrypted(why) => {
            eprintln!(
                "tcpcrypt: {}: not decrypted, copied as captured: {why}",
                name(n, conn)
            );
        }
        ConnOutcome::Decrypted { directions, .. } => {
            for (d, report) in directions.iter().enumerate() {
                for failure in &report.failures {
                    eprintln!(
                        "tcpcrypt: {}, {}: {failure}; the rest of this direction is not decrypted",
                        name(n, conn),
                        DIRECTIONS[d]
                    );
                }
                for note in &report.notes {
                    eprintln!("tcpcrypt: {}, {}: {note}", name(n, conn), DIRECTIONS[d]);
                }
            }
        }
    }
}

fn print_summary(result: &Decrypted) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for (n, conn) in result.connections.iter().enumerate() {
        writeln!(out, "{}", name(n + 1, conn))?;
        match &conn.outcome {
            ConnOutcome::Plain(why) => writeln!(out, "  plain TCP: {why}")?,
            ConnOutcome::NotDecrypted(why) => writeln!(out, "  NOT DECRYPTED: {why}")?,
            ConnOutcome::Decrypted { facts, directions } => {
                writeln!(
                    out,
                    "  roles: client {}, server {}",
                    facts.client_role,
                    facts.client_role.peer()
                )?;
                writeln!(
                    out,
                    "  TEP {}, AEAD {}, {}",
                    facts.tep.name(),
                    facts.aead.map_or("unknown (no frames)", |a| a.name()),
                    if facts.resumed { "resumed" } else { "fresh" }
                )?;
                writeln!(out, "  session ID {}", facts.session_id)?;
                for (d, r) in directions.iter().enumerate() {
                    writeln!(
                        out,
                        "  {}: {} bytes of data in {} frames ({} wire bytes), {} rekeys, {} authentication failures{}{}",
                        DIRECTIONS[d],
                        r.plaintext.len(),
                        r.frames,
                        r.wire_bytes,
                        r.rekeys,
                        r.failures.len(),
                        r.failures
                            .iter()
                            .map(|f| format!(" [{f}]"))
                            .collect::<String>(),
                        if r.closed {
                            ""
                        } else {
                            "; the capture ends before it closed"
                        }
                    )?;
                }
            }
        }
    }
    Ok(())
}
