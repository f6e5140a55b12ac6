//! Bindgen output for the httpd/APR items the module uses (see build.rs).
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    unsafe_op_in_unsafe_fn,
    clippy::all
)]
include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
