//! The C side of the module: everything httpd calls, and every call into
//! httpd or APR. Each entry point catches unwinds (a panic would abort the
//! httpd child and drop all its connections) and hands the decisions to the
//! plain-Rust modules of the crate.
//!
//! Not compiled for unit tests: the `ap_*`/`apr_*` symbols exist only inside
//! a running httpd.

mod authn;
mod authz;
mod conn;
mod directives;
mod expr;
mod guard;
mod hooks;
mod log;
mod module;
mod optional;
mod pool;
mod sys;
