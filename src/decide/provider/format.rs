//! What a provider's tokens look like: checked before anything is sent.

use std::sync::Arc;

use crate::decide::token::MAX_TOKEN_BYTES;

/// The shape of token a provider issues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFormat {
    /// The provider's name, for messages.
    pub provider: String,
    /// The claims must parse as a JWT's (Raise).
    pub jwt: bool,
    /// A fixed prefix (CharityStack `cs_live_`).
    pub prefix: Option<String>,
    /// A pattern the whole token must match.
    pub pattern: Option<TokenPattern>,
    /// The largest token accepted, in bytes (at most `MAX_TOKEN_BYTES`).
    pub max_bytes: usize,
}

impl TokenFormat {
    /// Anything header-safe up to the global bound; a JWT's `exp` is read when present.
    pub fn opaque(provider: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            jwt: false,
            prefix: None,
            pattern: None,
            max_bytes: MAX_TOKEN_BYTES,
        }
    }
}

/// A compiled token pattern: anchored, bounded in size, compiled once per definition.
#[derive(Clone, Debug)]
pub struct TokenPattern {
    source: String,
    regex: Arc<regex::Regex>,
}

/// A compiled pattern may take at most this much memory: a hostile or careless definition
/// cannot make every token check expensive.
pub const PATTERN_SIZE_LIMIT: usize = 64 * 1024;
/// The longest pattern accepted (the CRD says the same).
pub const PATTERN_MAX_CHARS: usize = 256;

impl TokenPattern {
    /// Compiles `source` anchored at both ends. The error names the problem, never a token.
    pub fn compile(source: &str) -> Result<Self, String> {
        if source.chars().count() > PATTERN_MAX_CHARS {
            return Err(format!("token.pattern is longer than {PATTERN_MAX_CHARS} characters"));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(PATTERN_SIZE_LIMIT)
            .dfa_size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => {
                    format!("token.pattern compiles to more than {PATTERN_SIZE_LIMIT} bytes; simplify it")
                }
                other => {
                    let first = other.to_string().lines().last().unwrap_or_default().trim().to_owned();
                    format!("token.pattern does not compile: {first}")
                }
            })?;
        Ok(Self {
            source: source.to_owned(),
            regex: Arc::new(regex),
        })
    }

    pub fn is_match(&self, token: &str) -> bool {
        self.regex.is_match(token)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for TokenPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for TokenPattern {}
