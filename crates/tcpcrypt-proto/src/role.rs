/// The two ENO roles (RFC 8547 section 4.2).
///
/// Host A is the side whose global suboption has `b = 0` (normally the active
/// opener); host B has `b = 1` (normally the passive opener). Applications
/// must bind the role together with the session ID when they authenticate a
/// connection, so it is exposed everywhere a session ID is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    A,
    B,
}

impl Role {
    /// The other end's role.
    pub fn peer(self) -> Role {
        match self {
            Role::A => Role::B,
            Role::B => Role::A,
        }
    }

    /// `"A"` or `"B"`, as shown to operators and applications.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::A => "A",
            Role::B => "B",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn peer_role_is_the_other_one() {
        assert_eq!(Role::A.peer(), Role::B);
        assert_eq!(Role::B.peer(), Role::A);
        assert_eq!(Role::A.to_string(), "A");
    }
}
