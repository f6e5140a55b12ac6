//! The module record httpd loads (`LoadModule tcpcrypt_module ...`), its
//! directive table, and hook registration.

use std::ffi::{c_char, c_int, c_ulong};
use std::ptr;

use super::sys::{
    AP_AUTH_INTERNAL_PER_CONF, APR_HOOK_FIRST, APR_HOOK_MIDDLE, AUTHZ_PROVIDER_GROUP,
    AUTHZ_PROVIDER_VERSION, FLAG, MODULE_MAGIC_COOKIE, MODULE_MAGIC_NUMBER_MAJOR,
    MODULE_MAGIC_NUMBER_MINOR, OR_AUTHCFG, OR_OPTIONS, RSRC_CONF, TAKE1, ap_hook_check_authn,
    ap_hook_expr_lookup, ap_hook_fixups, ap_hook_post_config, ap_hook_pre_connection,
    ap_register_auth_provider, apr_pool_t, cmd_func, command_rec, module,
};
use super::{authn, authz, directives, expr, guard, hooks, optional};

/// A C array of pointers that never changes after compilation. httpd only
/// reads it, so sharing it between threads is sound.
#[repr(transparent)]
struct Table<T, const N: usize>([T; N]);

// SAFETY: the tables are immutable and only hold pointers to 'static data
// (C string literals and functions).
unsafe impl<T, const N: usize> Sync for Table<T, N> {}

const fn command(
    name: &'static std::ffi::CStr,
    func: cmd_func,
    req_override: u32,
    args_how: u32,
    help: &'static std::ffi::CStr,
) -> command_rec {
    command_rec {
        name: name.as_ptr(),
        func,
        cmd_data: ptr::null_mut(),
        req_override: req_override as c_int,
        args_how,
        errmsg: help.as_ptr(),
    }
}

static COMMANDS: Table<command_rec, 6> = Table([
    command(
        c"Tcpcrypt",
        cmd_func {
            flag: Some(directives::set_tcpcrypt),
        },
        OR_OPTIONS,
        FLAG,
        c"On|Off: set the TCP_CRYPT_* environment variables for requests on tcpcrypt connections here (default On)",
    ),
    command(
        c"TcpcryptControlSocket",
        cmd_func {
            take1: Some(directives::set_control_socket),
        },
        RSRC_CONF,
        TAKE1,
        c"absolute path of tcpcryptd's control socket (default: $TCPCRYPT_CONTROL, else /run/tcpcrypt/control.sock)",
    ),
    command(
        c"TcpcryptLookupTimeout",
        cmd_func {
            take1: Some(directives::set_lookup_timeout),
        },
        RSRC_CONF,
        TAKE1,
        c"milliseconds (1-10000) a session lookup may take before the request is served without the variables (default 200)",
    ),
    command(
        c"TcpcryptAuthUserFile",
        cmd_func {
            take1: Some(directives::set_auth_user_file),
        },
        OR_AUTHCFG,
        TAKE1,
        c"absolute path of the SCRAM-SHA-256 verifier file (made with `tcpcrypt passwd`) for AuthType tcpcrypt",
    ),
    command(
        c"TcpcryptAuthKeyFile",
        cmd_func {
            take1: Some(directives::set_auth_key_file),
        },
        OR_AUTHCFG,
        TAKE1,
        c"absolute path of the file of Ed25519 public keys and user names (lines from `tcpcrypt keygen`) for AuthType tcpcrypt",
    ),
    // The terminator httpd looks for: a null name.
    command_rec {
        name: ptr::null(),
        func: cmd_func { no_args: None },
        cmd_data: ptr::null_mut(),
        req_override: 0,
        args_how: 0,
        errmsg: ptr::null(),
    },
]);

/// Per-directory rewrite rules run in fixups at APR_HOOK_FIRST too; naming
/// mod_rewrite as a successor puts our variables in place before them.
static BEFORE_REWRITE: Table<*const c_char, 2> = Table([c"mod_rewrite.c".as_ptr(), ptr::null()]);

/// The module record. httpd writes `module_index`, `next` and
/// `dynamic_load_handle` when it loads the module, hence `static mut`.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static mut tcpcrypt_module: module = module {
    version: MODULE_MAGIC_NUMBER_MAJOR as c_int,
    minor_version: MODULE_MAGIC_NUMBER_MINOR as c_int,
    module_index: -1,
    // Plays C's __FILE__: `<IfModule mod_tcpcrypt.c>` and hook ordering
    // lists match this name.
    name: c"mod_tcpcrypt.c".as_ptr(),
    dynamic_load_handle: ptr::null_mut(),
    next: ptr::null_mut(),
    magic: MODULE_MAGIC_COOKIE as c_ulong,
    rewrite_args: None,
    create_dir_config: Some(directives::create_dir_config),
    merge_dir_config: Some(directives::merge_dir_config),
    create_server_config: Some(directives::create_server_config),
    merge_server_config: Some(directives::merge_server_config),
    cmds: &raw const COMMANDS.0 as *const command_rec,
    register_hooks: Some(register_hooks),
    flags: 0,
};

/// The record, for `ap_get_module_config` and friends.
pub fn module_ptr() -> *const module {
    &raw const tcpcrypt_module
}

/// Our slot in httpd's config vectors, and our name for `LogLevel tcpcrypt:`.
pub fn module_index() -> c_int {
    // SAFETY: a plain read through a raw pointer; httpd writes the field
    // once while loading modules, before any hook can run.
    unsafe { (*module_ptr()).module_index }
}

unsafe extern "C" fn register_hooks(p: *mut apr_pool_t) {
    guard::catch((), || {
        // SAFETY: called by httpd with its config pool; every function and
        // name list passed lives for the whole process.
        unsafe {
            ap_hook_post_config(
                Some(hooks::post_config),
                ptr::null(),
                ptr::null(),
                APR_HOOK_MIDDLE as c_int,
            );
            ap_hook_pre_connection(
                Some(hooks::pre_connection),
                ptr::null(),
                ptr::null(),
                APR_HOOK_MIDDLE as c_int,
            );
            ap_hook_fixups(
                Some(hooks::fixups),
                ptr::null(),
                BEFORE_REWRITE.0.as_ptr(),
                APR_HOOK_FIRST as c_int,
            );
            ap_hook_expr_lookup(
                Some(expr::lookup),
                ptr::null(),
                ptr::null(),
                APR_HOOK_MIDDLE as c_int,
            );
            ap_register_auth_provider(
                p,
                AUTHZ_PROVIDER_GROUP.as_ptr().cast(),
                c"tcpcrypt".as_ptr(),
                AUTHZ_PROVIDER_VERSION.as_ptr().cast(),
                (&raw const authz::PROVIDER).cast(),
                AP_AUTH_INTERNAL_PER_CONF as c_int,
            );
            // Per-conf: httpd runs it only where authentication is
            // configured, as for mod_auth_basic.
            ap_hook_check_authn(
                Some(authn::check_authn),
                ptr::null(),
                ptr::null(),
                APR_HOOK_MIDDLE as c_int,
                AP_AUTH_INTERNAL_PER_CONF as c_int,
            );
            optional::register();
        }
    });
}
