//! Shared pieces of the integration tests: a fake tcpcryptd, a private
//! httpd, and a small HTTP/1.1 client.
#![allow(dead_code)]

pub mod daemon;
pub mod http;
pub mod httpd;
