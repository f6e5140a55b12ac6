//! The `tcpcryptd` program: parse the configuration, start logging, build
//! the engines and run the daemon until a termination signal.

use std::process::ExitCode;

use clap::Parser;
use tcpcryptd::config::{Args, Config};
use tcpcryptd::{daemon, engine_adapter, logging};

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tcpcryptd: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(config.log_level);
    // One tally for every packet thread's engine: the limits are the host's.
    let tally = std::sync::Arc::new(tcpcrypt_engine::SharedTally::default());
    match daemon::run(&config, || engine_adapter::build(&config, &tally)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
