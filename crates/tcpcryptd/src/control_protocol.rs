//! The daemon's side of the control protocol. The protocol itself (requests,
//! answers, error words, the session type) is `tcpcrypt-control`'s; this
//! module only turns the protocol's policy words into the engine's, so that
//! conversion has one place.

pub use tcpcrypt_control::PolicyUpdate;
use tcpcrypt_control::{self as control};

use crate::engine_api::{AppAware, ConnectionPolicy, PolicyScope};

/// Applies a `set_policy`'s fields to the registration it replaces.
///
/// A trait because both types are other crates'; it is applied on the
/// engine's thread so two updates of one socket's fields cannot race.
pub trait ApplyUpdate {
    /// The registration after this update replaces `base`: a field the
    /// request left out keeps its value from `base`.
    fn apply(self, base: ConnectionPolicy) -> ConnectionPolicy;
}

impl ApplyUpdate for PolicyUpdate {
    fn apply(self, base: ConnectionPolicy) -> ConnectionPolicy {
        ConnectionPolicy {
            ignore_resumption: self.no_resumption.unwrap_or(base.ignore_resumption),
            no_cache: self.no_cache.unwrap_or(base.no_cache),
            // `None` in the engine means "the host's configured mode", so
            // only a mode the request names replaces it.
            app_aware: self.app_aware.map(app_aware).or(base.app_aware),
        }
    }
}

/// The engine's name for a policy's scope.
pub fn scope(scope: control::PolicyScope) -> PolicyScope {
    match scope {
        control::PolicyScope::Connect => PolicyScope::Connect,
        control::PolicyScope::Listen => PolicyScope::Listen,
    }
}

fn app_aware(mode: control::AppAware) -> AppAware {
    match mode {
        control::AppAware::Off => AppAware::Off,
        control::AppAware::On => AppAware::On,
        control::AppAware::Mandatory => AppAware::Mandatory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_left_out_keeps_the_registered_value() {
        let base = ConnectionPolicy {
            ignore_resumption: true,
            ..ConnectionPolicy::default()
        };
        let only_cache = PolicyUpdate {
            no_cache: Some(true),
            ..PolicyUpdate::default()
        };
        assert_eq!(
            only_cache.apply(base),
            ConnectionPolicy {
                ignore_resumption: true,
                no_cache: true,
                ..base
            }
        );
        assert_eq!(PolicyUpdate::default().apply(base), base);
    }

    #[test]
    fn app_aware_left_out_keeps_the_registered_mode_or_the_hosts() {
        let on = ConnectionPolicy {
            app_aware: Some(AppAware::On),
            ..ConnectionPolicy::default()
        };
        let no_cache = PolicyUpdate {
            no_cache: Some(true),
            ..PolicyUpdate::default()
        };
        assert_eq!(no_cache.apply(on).app_aware, Some(AppAware::On));
        assert_eq!(
            no_cache.apply(ConnectionPolicy::default()).app_aware,
            None,
            "an update that names no mode must leave the host's in force"
        );
        for (word, mode) in [
            (control::AppAware::Off, AppAware::Off),
            (control::AppAware::On, AppAware::On),
            (control::AppAware::Mandatory, AppAware::Mandatory),
        ] {
            let update = PolicyUpdate {
                app_aware: Some(word),
                ..PolicyUpdate::default()
            };
            assert_eq!(update.apply(on).app_aware, Some(mode));
        }
    }

    #[test]
    fn scopes_keep_their_meaning() {
        assert_eq!(scope(control::PolicyScope::Connect), PolicyScope::Connect);
        assert_eq!(scope(control::PolicyScope::Listen), PolicyScope::Listen);
    }
}
