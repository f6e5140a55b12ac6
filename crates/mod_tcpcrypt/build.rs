//! Generates the httpd/APR bindings from the installed headers.
//!
//! Header locations come from `apxs -q INCLUDEDIR` and
//! `apr-1-config --includes --cppflags`; the `APXS` and `APR_CONFIG`
//! environment variables name other tools (e.g. a custom httpd build).
//! Only the items the module uses are bound, so the bindings stay small and a
//! header change elsewhere cannot break the build.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn tool_output(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!(
            "running `{tool} {}` failed: {e} (install apache2-dev, or set APXS/APR_CONFIG)",
            args.join(" ")
        )
    });
    if !out.status.success() {
        panic!(
            "`{tool} {}` exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-env-changed=APXS");
    println!("cargo:rerun-if-env-changed=APR_CONFIG");

    let apxs = env::var("APXS").unwrap_or_else(|_| "apxs".to_owned());
    let apr_config = env::var("APR_CONFIG").unwrap_or_else(|_| "apr-1-config".to_owned());

    let httpd_include = tool_output(&apxs, &["-q", "INCLUDEDIR"]);
    let apr_flags = tool_output(&apr_config, &["--includes", "--cppflags"]);

    let builder = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg(format!("-I{httpd_include}"))
        .clang_args(apr_flags.split_whitespace())
        .allowlist_type("module")
        .allowlist_type("command_rec")
        .allowlist_type("cmd_parms")
        .allowlist_type("conn_rec")
        .allowlist_type("request_rec")
        .allowlist_type("server_rec")
        .allowlist_type("authz_provider")
        .allowlist_type("authz_status")
        .allowlist_type("ap_expr_lookup_parms")
        .allowlist_type("ap_expr_eval_ctx_t")
        .allowlist_type("apr_sockaddr_t")
        .allowlist_type("apr_opt_fn_t")
        .allowlist_function("ap_hook_pre_connection")
        .allowlist_function("ap_hook_post_config")
        .allowlist_function("ap_hook_fixups")
        .allowlist_function("ap_hook_expr_lookup")
        .allowlist_function("ap_hook_check_authn")
        .allowlist_function("ap_auth_type")
        .allowlist_function("ap_auth_name")
        .allowlist_function("apr_table_get")
        .allowlist_function("apr_table_add")
        .allowlist_function("ap_register_auth_provider")
        .allowlist_function("ap_log_error_")
        .allowlist_function("ap_log_cerror_")
        .allowlist_function("ap_log_rerror_")
        .allowlist_function("ap_get_module_config")
        .allowlist_function("ap_set_module_config")
        .allowlist_function("apr_palloc")
        .allowlist_function("apr_pstrdup")
        .allowlist_function("apr_pstrmemdup")
        .allowlist_function("apr_pool_cleanup_register")
        .allowlist_function("apr_pool_cleanup_null")
        .allowlist_function("apr_table_set")
        .allowlist_function("apr_table_unset")
        .allowlist_function("apr_dynamic_fn_register")
        .allowlist_var("MODULE_MAGIC_COOKIE")
        .allowlist_var("MODULE_MAGIC_NUMBER_MAJOR")
        .allowlist_var("MODULE_MAGIC_NUMBER_MINOR")
        .allowlist_var("APR_HOOK_.*")
        .allowlist_var("OK")
        .allowlist_var("DECLINED")
        .allowlist_var("RSRC_CONF")
        .allowlist_var("ACCESS_CONF")
        .allowlist_var("OR_OPTIONS")
        .allowlist_var("OR_AUTHCFG")
        .allowlist_var("HTTP_(UNAUTHORIZED|FORBIDDEN|BAD_REQUEST|INTERNAL_SERVER_ERROR)")
        .allowlist_var("APLOG_(ERR|WARNING|INFO|DEBUG)")
        .allowlist_var("AP_EXPR_FUNC_VAR")
        .allowlist_var("AP_AUTH_INTERNAL_PER_CONF")
        .allowlist_var("AUTHZ_PROVIDER_(GROUP|VERSION)")
        .allowlist_var("APR_INET6?")
        .allowlist_var("APR_SUCCESS")
        .derive_default(false)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false);

    let bindings = builder.generate().unwrap_or_else(|e| {
        panic!("bindgen failed on wrapper.h with -I{httpd_include} {apr_flags}: {e}")
    });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.join("bindings.rs").display()));
}
