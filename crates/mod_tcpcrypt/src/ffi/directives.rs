//! Config creation, merging and directive handlers: httpd's view of
//! `crate::config`.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;

use super::module::module_ptr;
use super::sys::{ap_conf_vector_t, ap_get_module_config, apr_pool_t, cmd_parms, server_rec};
use super::{guard, pool};
use crate::config::{ControlSocketPath, DirConfig, LookupTimeout, ServerConfig};

pub unsafe extern "C" fn create_server_config(
    p: *mut apr_pool_t,
    _s: *mut server_rec,
) -> *mut c_void {
    guard::catch(ptr::null_mut(), || {
        // SAFETY: httpd passes its live config pool.
        unsafe { pool::boxed(p, ServerConfig::default()).cast() }
    })
}

pub unsafe extern "C" fn merge_server_config(
    p: *mut apr_pool_t,
    base: *mut c_void,
    vhost: *mut c_void,
) -> *mut c_void {
    guard::catch(ptr::null_mut(), || {
        // SAFETY: both were made by create_server_config (or an earlier
        // merge) and live in the config pool, which outlives this call.
        let (base, vhost) = unsafe {
            (
                &*base.cast::<ServerConfig>(),
                &*vhost.cast::<ServerConfig>(),
            )
        };
        // SAFETY: httpd passes its live config pool.
        unsafe { pool::boxed(p, ServerConfig::merge(base, vhost)).cast() }
    })
}

pub unsafe extern "C" fn create_dir_config(p: *mut apr_pool_t, _dir: *mut c_char) -> *mut c_void {
    guard::catch(ptr::null_mut(), || {
        // SAFETY: httpd passes a live pool (the config pool, or the request
        // pool for .htaccess).
        unsafe { pool::boxed(p, DirConfig::default()).cast() }
    })
}

pub unsafe extern "C" fn merge_dir_config(
    p: *mut apr_pool_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_void {
    guard::catch(ptr::null_mut(), || {
        // SAFETY: both were made by create_dir_config or an earlier merge, in
        // pools that outlive the merged result's pool.
        let (parent, child) =
            unsafe { (&*parent.cast::<DirConfig>(), &*child.cast::<DirConfig>()) };
        // SAFETY: httpd passes a live pool.
        unsafe { pool::boxed(p, DirConfig::merge(parent, child)).cast() }
    })
}

/// The merged settings of server `s`.
///
/// # Safety
/// `s` must be a live `server_rec` whose config vector holds our entry (true
/// for every server once configuration is read).
pub unsafe fn server_config<'a>(s: *const server_rec) -> Option<&'a ServerConfig> {
    if s.is_null() {
        return None;
    }
    // SAFETY: s is live; the slot holds null or a ServerConfig from
    // create/merge_server_config, alive as long as the config pool.
    unsafe {
        ap_get_module_config((*s).module_config, module_ptr())
            .cast::<ServerConfig>()
            .as_ref()
    }
}

/// The merged settings of a request's directory.
///
/// # Safety
/// `v` must be a request's live `per_dir_config`.
pub unsafe fn dir_config<'a>(v: *mut ap_conf_vector_t) -> Option<&'a DirConfig> {
    if v.is_null() {
        return None;
    }
    // SAFETY: v is live; the slot holds null or a DirConfig from
    // create/merge_dir_config.
    unsafe {
        ap_get_module_config(v, module_ptr())
            .cast::<DirConfig>()
            .as_ref()
    }
}

pub unsafe extern "C" fn set_tcpcrypt(
    _cmd: *mut cmd_parms,
    mconfig: *mut c_void,
    on: c_int,
) -> *const c_char {
    guard::catch(c"Tcpcrypt: internal error".as_ptr(), || {
        // SAFETY: for a directory-scope directive httpd passes our DirConfig
        // for the section being read.
        if let Some(dir) = unsafe { mconfig.cast::<DirConfig>().as_mut() } {
            dir.export_variables = Some(on != 0);
        }
        ptr::null()
    })
}

/// Runs a server-scope directive handler on the server being configured,
/// turning its error into a message in the command's pool.
///
/// # Safety
/// `cmd` and `arg` as httpd passes them to a TAKE1 handler.
unsafe fn with_server_arg(
    cmd: *mut cmd_parms,
    arg: *const c_char,
    directive: &str,
    apply: impl FnOnce(&mut ServerConfig, &str) -> Result<(), String>,
) -> *const c_char {
    // SAFETY: httpd passes a live cmd_parms and a NUL-terminated argument.
    let (server, pool, arg) = unsafe { ((*cmd).server, (*cmd).pool, CStr::from_ptr(arg)) };
    let result = match arg.to_str() {
        Err(_) => Err(format!("{directive}: argument is not valid UTF-8")),
        Ok(arg) => {
            // SAFETY: server is the one whose section is being read; its
            // ServerConfig lives in the config pool and is only touched
            // by the single configuration thread now.
            let config = unsafe {
                ap_get_module_config((*server).module_config, module_ptr())
                    .cast::<ServerConfig>()
                    .as_mut()
            };
            match config {
                Some(config) => apply(config, arg),
                None => Err(format!("{directive}: module configuration missing")),
            }
        }
    };
    match result {
        Ok(()) => ptr::null(),
        // SAFETY: the command pool is live while the directive is read.
        Err(message) => unsafe { pool::strdup(pool, &message) },
    }
}

pub unsafe extern "C" fn set_control_socket(
    cmd: *mut cmd_parms,
    _mconfig: *mut c_void,
    arg: *const c_char,
) -> *const c_char {
    guard::catch(c"TcpcryptControlSocket: internal error".as_ptr(), || {
        // SAFETY: called by httpd as a TAKE1 handler.
        unsafe {
            with_server_arg(cmd, arg, "TcpcryptControlSocket", |config, arg| {
                config.control_socket =
                    Some(ControlSocketPath::parse(arg).map_err(|e| e.to_string())?);
                Ok(())
            })
        }
    })
}

pub unsafe extern "C" fn set_lookup_timeout(
    cmd: *mut cmd_parms,
    _mconfig: *mut c_void,
    arg: *const c_char,
) -> *const c_char {
    guard::catch(c"TcpcryptLookupTimeout: internal error".as_ptr(), || {
        // SAFETY: called by httpd as a TAKE1 handler.
        unsafe {
            with_server_arg(cmd, arg, "TcpcryptLookupTimeout", |config, arg| {
                config.lookup_timeout = Some(LookupTimeout::parse(arg).map_err(|e| e.to_string())?);
                Ok(())
            })
        }
    })
}

/// A directory-scope TAKE1 directive naming a file, stored by `apply`.
///
/// # Safety
/// As httpd calls a TAKE1 handler: `mconfig` is our DirConfig for the
/// section being read, `arg` NUL-terminated.
unsafe fn with_dir_file(
    cmd: *mut cmd_parms,
    mconfig: *mut c_void,
    arg: *const c_char,
    directive: &str,
    apply: impl FnOnce(&mut DirConfig, std::path::PathBuf),
) -> *const c_char {
    // SAFETY: caller's contract.
    let (pool, arg) = unsafe { ((*cmd).pool, CStr::from_ptr(arg)) };
    let result = match arg.to_str() {
        Err(_) => Err(format!("{directive}: argument is not valid UTF-8")),
        Ok(path) if !path.starts_with('/') => Err(format!(
            "{directive}: expected an absolute path, got '{path}'"
        )),
        Ok(path) => {
            // SAFETY: caller's contract.
            match unsafe { mconfig.cast::<DirConfig>().as_mut() } {
                Some(dir) => {
                    apply(dir, std::path::PathBuf::from(path));
                    Ok(())
                }
                None => Err(format!("{directive}: module configuration missing")),
            }
        }
    };
    match result {
        Ok(()) => ptr::null(),
        // SAFETY: the command pool is live while the directive is read.
        Err(message) => unsafe { pool::strdup(pool, &message) },
    }
}

pub unsafe extern "C" fn set_auth_user_file(
    cmd: *mut cmd_parms,
    mconfig: *mut c_void,
    arg: *const c_char,
) -> *const c_char {
    guard::catch(c"TcpcryptAuthUserFile: internal error".as_ptr(), || {
        // SAFETY: called by httpd as a TAKE1 handler of a directory directive.
        unsafe {
            with_dir_file(cmd, mconfig, arg, "TcpcryptAuthUserFile", |dir, path| {
                dir.auth_user_file = Some(path);
            })
        }
    })
}

pub unsafe extern "C" fn set_auth_key_file(
    cmd: *mut cmd_parms,
    mconfig: *mut c_void,
    arg: *const c_char,
) -> *const c_char {
    guard::catch(c"TcpcryptAuthKeyFile: internal error".as_ptr(), || {
        // SAFETY: called by httpd as a TAKE1 handler of a directory directive.
        unsafe {
            with_dir_file(cmd, mconfig, arg, "TcpcryptAuthKeyFile", |dir, path| {
                dir.auth_key_file = Some(path);
            })
        }
    })
}
