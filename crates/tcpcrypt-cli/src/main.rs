//! `tcpcrypt`: the command-line view of tcpcryptd for people checking
//! connections by hand and for scripts.
//!
//! Owns: argument parsing, the `status` table and JSON, the one-connection
//! `lookup` view, and `fetch`, a minimal HTTP/1.1 client that reports the
//! session of its own connection, and `decrypt`, the file I/O around the
//! tcpcrypt-decrypt library. All daemon access goes through the
//! tcpcrypt-client library, so the command sees exactly what applications see.
//!
//! Must not: contain protocol logic or speak the control protocol itself.

mod auth;
mod cli;
mod decrypt;
mod exit;
mod fetch;
mod http;
mod render;
mod status;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tcpcrypt::{Client, Lookup};

use crate::cli::{Cli, Command, LookupArgs, PolicyCommand, PolicyTarget};
use crate::exit::{Failure, Outcome};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version are not errors; everything else is a usage error.
            let _ = e.print();
            return if e.use_stderr() {
                Outcome::Usage.into()
            } else {
                Outcome::Ok.into()
            };
        }
    };
    let client = Client::with_control_path(tcpcrypt::control_path(cli.control.as_deref()))
        .timeout(Duration::from_millis(cli.timeout));
    let outcome = match cli.command {
        Command::Status(args) => status::run(&client, &args),
        Command::Lookup(args) => lookup(&client, &args),
        Command::Fetch(args) => fetch::run(&client, &args),
        Command::FlushResumption => flush_resumption(&client),
        Command::Policy(cmd) => policy(&client, &cmd),
        Command::Passwd(args) => auth::passwd(&args),
        Command::Keygen(args) => auth::keygen(&args),
        Command::Decrypt(args) => decrypt::run(&args),
    };
    match outcome {
        Ok(outcome) => outcome.into(),
        Err(failure) => {
            // `tcpcrypt status | head` closing the pipe early is not news.
            let quiet = matches!(&failure, Failure::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe);
            if !quiet {
                eprintln!("tcpcrypt: {failure}");
            }
            failure.outcome().into()
        }
    }
}

fn flush_resumption(client: &Client) -> Result<Outcome, Failure> {
    let flushed = client.flush_resumption().map_err(Failure::Daemon)?;
    println!("forgot {flushed} cached resumption secret(s)");
    Ok(Outcome::Ok)
}

fn scope(target: &PolicyTarget) -> tcpcrypt::PolicyScope {
    if target.listen {
        tcpcrypt::PolicyScope::Listen
    } else {
        tcpcrypt::PolicyScope::Connect
    }
}

fn policy(client: &Client, cmd: &PolicyCommand) -> Result<Outcome, Failure> {
    match cmd {
        PolicyCommand::Set(args) => {
            let policy = tcpcrypt::Policy {
                no_resumption: args.no_resumption,
                no_cache: args.no_cache,
                app_aware: args.app_aware.map(Into::into).unwrap_or_default(),
            };
            let t = &args.target;
            client
                .set_policy(scope(t), t.local, policy)
                .map_err(Failure::Daemon)?;
            println!(
                "{} {}: no_resumption={} no_cache={} app_aware={}",
                scope(t).word(),
                tcpcrypt::format_addr(t.local),
                policy.no_resumption,
                policy.no_cache,
                policy.app_aware.word()
            );
        }
        PolicyCommand::Clear(t) => {
            let cleared = client
                .clear_policy(scope(t), t.local)
                .map_err(Failure::Daemon)?;
            let what = if cleared { "cleared" } else { "had no policy" };
            println!(
                "{} {}: {what}",
                scope(t).word(),
                tcpcrypt::format_addr(t.local)
            );
        }
    }
    Ok(Outcome::Ok)
}

fn lookup(client: &Client, args: &LookupArgs) -> Result<Outcome, Failure> {
    let wait = Duration::from_millis(args.wait);
    let answer = client
        .lookup_addrs_wait(args.local, args.remote, wait)
        .map_err(Failure::Daemon)?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        render::write_json_line(
            &mut out,
            &render::lookup_json(args.local, args.remote, &answer),
        )
    } else {
        render::write_lookup(&mut out, args.local, args.remote, &answer)
    };
    written.map_err(Failure::Output)?;
    Ok(match answer {
        Lookup::Tcpcrypt(_) => Outcome::Ok,
        _ => Outcome::NotEncrypted,
    })
}
