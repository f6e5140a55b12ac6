//! Logins to mod_tcpcrypt's `AuthType tcpcrypt`: `fetch --user/--key`,
//! `passwd` and `keygen`. The messages come from the library
//! (`tcpcrypt::login`, over tcpcrypt-auth); this module does the terminal,
//! the files and the two HTTP round trips.

use std::fs;
use std::io::{self, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::num::NonZeroU32;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tcpcrypt::login::{PasswordLogin, key_authorization};
use tcpcrypt::{Client, Lookup, Session};
use tcpcrypt_auth::key::{PrivateKey, valid_user_name};
use tcpcrypt_auth::scram::{Credentials, DEFAULT_ITERATIONS, MAX_ITERATIONS, MIN_ITERATIONS};
use tcpcrypt_auth::{random, verifier};

use crate::cli::FetchArgs;
use crate::exit::{Failure, Outcome};
use crate::{fetch, http};

/// Where a password comes from (shared by `fetch --user` and `passwd`).
#[derive(Debug, Args)]
pub struct PasswordSource {
    /// Read the password from the first line of FILE instead of a prompt
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,

    /// Read the password from the environment variable VAR instead of a
    /// prompt
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

/// `fetch` options for servers with `AuthType tcpcrypt`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Log in as NAME with a password: SCRAM-SHA-256 bound to this
    /// connection's tcpcrypt session, so neither the password nor a
    /// replayable proof crosses the wire, and the server proves that it
    /// knows the password's verifier before the page is printed
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "key",
        help_heading = "Login"
    )]
    pub user: Option<String>,

    #[command(flatten)]
    #[command(next_help_heading = "Login")]
    pub password: PasswordSource,

    /// Log in with the Ed25519 key in FILE (made by `tcpcrypt keygen`),
    /// signing this connection's session ID
    #[arg(long, value_name = "FILE", help_heading = "Login")]
    pub key: Option<PathBuf>,
}

impl LoginArgs {
    pub fn requested(&self) -> bool {
        self.user.is_some() || self.key.is_some()
    }
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// The verifier file (created if missing)
    pub file: PathBuf,

    /// The user whose verifier to set
    pub user: String,

    /// PBKDF2 iterations: each login costs the client this much; so does
    /// each guess of someone who stole the file
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(i64::from(MIN_ITERATIONS)..=i64::from(MAX_ITERATIONS)))]
    pub iterations: u32,

    #[command(flatten)]
    pub password: PasswordSource,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (the public line goes to FILE.pub)
    pub file: PathBuf,

    /// The user name to put on the public line [default: $USER]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Overwrite an existing FILE
    #[arg(long)]
    pub force: bool,
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The password from the chosen source; a prompt asks `confirm` times more.
fn read_password(src: &PasswordSource, prompt: &str, confirm: bool) -> Result<String, Failure> {
    let password = if let Some(path) = &src.password_file {
        let text = fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        first_line(&text).to_owned()
    } else if let Some(var) = &src.password_env {
        std::env::var(var)
            .map_err(|_| Failure::Usage(format!("environment variable {var} is not set")))?
    } else {
        let p = rpassword::prompt_password(prompt).map_err(|e| {
            Failure::Usage(format!("cannot read a password from the terminal: {e}"))
        })?;
        if confirm {
            let again = rpassword::prompt_password("Again: ")
                .map_err(|e| Failure::Usage(format!("cannot read a password: {e}")))?;
            if again != p {
                return Err(Failure::Usage("the passwords differ".to_owned()));
            }
        }
        p
    };
    if password.is_empty() {
        return Err(Failure::Usage("empty password".to_owned()));
    }
    Ok(password)
}

pub fn passwd(args: &PasswdArgs) -> Result<Outcome, Failure> {
    if !valid_user_name(&args.user) {
        return Err(Failure::Usage(format!(
            "{:?} is not a usable user name (visible ASCII, no ':', at most 255)",
            args.user
        )));
    }
    let iterations = NonZeroU32::new(args.iterations)
        .ok_or_else(|| Failure::Usage("iterations must be positive".to_owned()))?;
    let password = read_password(
        &args.password,
        &format!("Password for {}: ", args.user),
        true,
    )?;
    let old = match fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Failure::Usage(format!(
                "cannot read {}: {e}",
                args.file.display()
            )));
        }
    };
    let salt = random::bytes::<16>().map_err(|e| Failure::Http(e.to_string()))?;
    let creds = Credentials::derive(&password, &salt, iterations);
    let text =
        verifier::upsert(&old, &args.user, &creds).map_err(|e| Failure::Usage(e.to_string()))?;
    write_replacing(&args.file, &text, 0o640)?;
    let verb = if verifier::find(&old, &args.user).ok().flatten().is_some() {
        "updated"
    } else {
        "added"
    };
    println!(
        "{verb} {} in {} ({} iterations)",
        args.user,
        args.file.display(),
        args.iterations
    );
    Ok(Outcome::Ok)
}

/// Writes `text` to a temporary file next to `path` and renames it over
/// `path`, so a reader never sees half a file. A file that exists keeps its
/// owner, group and mode (an admin's `chgrp www-data` survives an update);
/// a new one gets `mode`.
fn write_replacing(path: &Path, text: &str, mode: u32) -> Result<(), Failure> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let fail = |e: io::Error| {
        Failure::Output(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    let existing = fs::metadata(path).ok();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    let keep = |f: &fs::File| -> io::Result<()> {
        if let Some(old) = &existing {
            std::os::unix::fs::fchown(f, Some(old.uid()), Some(old.gid()))?;
            f.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))?;
        }
        Ok(())
    };
    let written = keep(&f)
        .and_then(|()| f.write_all(text.as_bytes()))
        .and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

pub fn keygen(args: &KeygenArgs) -> Result<Outcome, Failure> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => std::env::var("USER")
            .map_err(|_| Failure::Usage("no --name given and $USER is not set".to_owned()))?,
    };
    if !valid_user_name(&name) {
        return Err(Failure::Usage(format!(
            "{name:?} is not a usable user name"
        )));
    }
    if args.file.exists() && !args.force {
        return Err(Failure::Usage(format!(
            "{} exists; use --force to replace it",
            args.file.display()
        )));
    }
    let (key, text) = PrivateKey::generate().map_err(|e| Failure::Http(e.to_string()))?;
    let _ = fs::remove_file(&args.file);
    write_replacing(&args.file, &text, 0o600)?;
    let public = key.authorized_line(&name);
    let mut pub_path = args.file.clone().into_os_string();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    let _ = fs::remove_file(&pub_path);
    write_replacing(&pub_path, &format!("{public}\n"), 0o644)?;
    eprintln!("private key: {} (keep it secret)", args.file.display());
    eprintln!(
        "add this line to the server's TcpcryptAuthKeyFile (also in {}):",
        pub_path.display()
    );
    println!("{public}");
    Ok(Outcome::Ok)
}

/// One request and its response head on `stream`; the body is left unread.
fn exchange(
    stream: &TcpStream,
    input: &mut BufReader<&TcpStream>,
    request: &str,
) -> Result<http::Head, Failure> {
    let http_err = |what: &str, e: io::Error| Failure::Http(format!("{what}: {e}"));
    let mut w = stream;
    w.write_all(request.as_bytes())
        .map_err(|e| http_err("sending the request", e))?;
    http::read_head(input).map_err(|e| http_err("reading the response", e))
}

fn header<'a>(head: &'a http::Head, name: &str) -> Option<&'a str> {
    head.header(name).next()
}

/// `fetch --user NAME` or `fetch --key FILE`.
pub fn fetch(client: &Client, args: &FetchArgs) -> Result<Outcome, Failure> {
    let url = http::parse_url(&args.url).map_err(Failure::Usage)?;
    let login = &args.login;
    // Everything that can fail without the network first.
    let password = match &login.user {
        Some(user) => Some(read_password(
            &login.password,
            &format!("Password for {user}: "),
            false,
        )?),
        None => None,
    };
    let key_text = match &login.key {
        Some(path) => Some(
            fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?,
        ),
        None => None,
    };
    let net_timeout = Duration::from_millis(args.net_timeout.max(1));
    let stream = fetch::connect(&url, net_timeout)?;
    stream
        .set_read_timeout(Some(net_timeout))
        .and_then(|()| stream.set_write_timeout(Some(net_timeout)))
        .map_err(|e| Failure::Http(format!("socket options: {e}")))?;
    let lookup = client.lookup_fd_wait(&stream, Duration::from_millis(args.wait));
    let outcome = fetch::report(&lookup);
    // Without a session there is nothing to bind to: no credentials are
    // sent. The exit status says why, as for a plain `fetch`.
    let session: Session = match lookup {
        Ok(Lookup::Tcpcrypt(s)) => s,
        Ok(_) => {
            eprintln!(
                "tcpcrypt: not logging in: this connection is not encrypted with tcpcrypt, so there is no session to bind the login to"
            );
            return Ok(Outcome::NotEncrypted);
        }
        Err(e) => return Err(Failure::Daemon(e)),
    };
    let mut input = BufReader::with_capacity(1 << 16, &stream);
    let head = match (&login.user, password, key_text) {
        (Some(user), Some(password), _) => {
            password_login(&stream, &mut input, &url, &session, user, &password)?
        }
        (_, _, Some(key_text)) => {
            let value = key_authorization(&session, &key_text)
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let head = exchange(
                &stream,
                &mut input,
                &url.request(&[("Authorization".to_owned(), value)]),
            )?;
            refused(&head)?;
            head
        }
        _ => {
            return Err(Failure::Usage(
                "--user or --key is needed for a login".to_owned(),
            ));
        }
    };
    if !(200..300).contains(&head.status) {
        eprintln!("tcpcrypt: server answered {}", head.status_line);
    }
    let framing =
        http::framing(&head).map_err(|e| Failure::Http(format!("response framing: {e}")))?;
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    http::copy_body(&mut input, framing, &mut out)
        .map_err(|e| Failure::Http(format!("reading the body: {e}")))?;
    out.flush().map_err(Failure::Output)?;
    Ok(outcome)
}

fn refused(head: &http::Head) -> Result<(), Failure> {
    match head.status {
        401 => Err(Failure::Login(format!(
            "the server refused it ({}); the server's error log says why",
            head.status_line
        ))),
        403 => Err(Failure::Login(format!(
            "the server forbids it ({}): it may not see this connection as tcpcrypt, or the user is not allowed here",
            head.status_line
        ))),
        _ => Ok(()),
    }
}

fn password_login(
    stream: &TcpStream,
    input: &mut BufReader<&TcpStream>,
    url: &http::Url,
    session: &Session,
    user: &str,
    password: &str,
) -> Result<http::Head, Failure> {
    let auth_err = |e: tcpcrypt::login::LoginError| Failure::Login(e.to_string());
    let (login, first) = PasswordLogin::start(session, user).map_err(auth_err)?;
    let head = exchange(
        stream,
        input,
        &url.request_on(&[("Authorization".to_owned(), first)], true),
    )?;
    if head.status != 401 {
        refused(&head)?;
        eprintln!("tcpcrypt: the server did not ask for a login here; not logged in");
        return Ok(head);
    }
    // The 401's body must be read off before the second request.
    let framing =
        http::framing(&head).map_err(|e| Failure::Http(format!("response framing: {e}")))?;
    if framing == http::Framing::UntilClose
        || header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        return Err(Failure::Login(
            "the server closed the connection after the first step; the login must finish on the same connection".to_owned(),
        ));
    }
    http::copy_body(input, framing, &mut io::sink())
        .map_err(|e| Failure::Http(format!("reading the 401 body: {e}")))?;
    let (proof, last) = login
        .answer(head.header("www-authenticate"), password)
        .map_err(auth_err)?;
    let head = exchange(
        stream,
        input,
        &url.request(&[("Authorization".to_owned(), last)]),
    )?;
    refused(&head)?;
    if (200..300).contains(&head.status) {
        proof
            .verify(header(&head, "authentication-info"))
            .map_err(auth_err)?;
        eprintln!("tcpcrypt: logged in as {user}; the server proved it knows the verifier");
    }
    Ok(head)
}
