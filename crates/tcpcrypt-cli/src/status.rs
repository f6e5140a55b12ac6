//! `tcpcrypt status`: every tracked connection, as a table or JSON.

use std::io::{BufWriter, Write};

use tcpcrypt::{Client, Connection, Lookup};

use crate::cli::StatusArgs;
use crate::exit::{Failure, Outcome};
use crate::render;

pub fn run(client: &Client, args: &StatusArgs) -> Result<Outcome, Failure> {
    let mut connections = client.list().map_err(Failure::Daemon)?;
    connections.sort_by_key(|c| (c.local, c.remote));
    let shown: Vec<&Connection> = connections
        .iter()
        .filter(|c| args.all || !matches!(c.lookup, Lookup::Plain { .. }))
        .collect();

    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let written = if args.json {
        render::write_json_line(&mut out, &render::connections_json(&shown))
    } else {
        render::write_table(&mut out, &shown).and_then(|()| out.flush())
    };
    written.map_err(Failure::Output)?;

    if !args.json {
        let encrypted = shown
            .iter()
            .filter(|c| c.lookup.session().is_some())
            .count();
        let hidden = connections.len() - shown.len();
        let mut summary = format!("{} connections shown, {encrypted} encrypted", shown.len());
        if hidden > 0 {
            summary.push_str(&format!("; {hidden} plain hidden (use --all)"));
        }
        eprintln!("{summary}");
    }
    Ok(Outcome::Ok)
}
