//! How a Secret is applied. The managed Secret is applied without force first, so a field
//! someone else owns answers 409 instead of being overwritten; the ownership check comes before
//! any write, so a 409 there is our own Secret edited by hand, and it is reclaimed with force,
//! once. The OAuth state Secret is created, then applied with force under its resourceVersion
//! (`decide::oauth::state`): tenantcred alone writes it, and the precondition makes a change since
//! it was read a 409 the machine answers (a read again), never a second attempt here.

/// Who writes a Secret's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writers {
    /// The managed Secret: people and other tools may own some of its fields.
    Shared,
    /// The OAuth state Secret: tenantcred alone writes it, guarded by the resourceVersion read.
    Operator,
}

/// One server-side apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    Plain,
    Forced,
}

/// What the API server answered an apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Applied,
    /// 409: a field is owned by another manager.
    Conflict,
    Failed,
}

/// What to do after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Done,
    Retry(Attempt),
    /// Give the answer to the caller as an error.
    Fail,
}

/// The first apply of a Secret with these writers.
pub fn first(writers: Writers) -> Attempt {
    match writers {
        Writers::Shared => Attempt::Plain,
        Writers::Operator => Attempt::Forced,
    }
}

/// What an answer to `attempt` leads to.
pub fn after(attempt: Attempt, answer: Answer) -> Next {
    match (answer, attempt) {
        (Answer::Applied, _) => Next::Done,
        (Answer::Conflict, Attempt::Plain) => Next::Retry(Attempt::Forced),
        (Answer::Conflict, Attempt::Forced) | (Answer::Failed, _) => Next::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_managed_secret_is_applied_without_force_first() {
        assert_eq!(first(Writers::Shared), Attempt::Plain);
        assert_eq!(after(Attempt::Plain, Answer::Applied), Next::Done);
    }

    #[test]
    fn a_conflict_on_our_own_secret_is_reclaimed_with_force_once() {
        assert_eq!(after(Attempt::Plain, Answer::Conflict), Next::Retry(Attempt::Forced));
        assert_eq!(after(Attempt::Forced, Answer::Applied), Next::Done);
        assert_eq!(after(Attempt::Forced, Answer::Conflict), Next::Fail, "never a loop");
    }

    #[test]
    fn any_other_failure_is_the_callers_without_a_retry() {
        assert_eq!(after(Attempt::Plain, Answer::Failed), Next::Fail);
        assert_eq!(after(Attempt::Forced, Answer::Failed), Next::Fail);
    }

    /// The state Secret: forced from the first apply (tenantcred's alone), and a 409 (its
    /// resourceVersion moved since it was read) goes back to the caller, never retried here.
    #[test]
    fn the_oauth_state_is_applied_with_force_under_its_version_and_a_conflict_is_the_callers() {
        assert_eq!(first(Writers::Operator), Attempt::Forced);
        assert_eq!(after(first(Writers::Operator), Answer::Conflict), Next::Fail);
    }
}
