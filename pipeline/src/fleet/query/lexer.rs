//! Splits a query string into tokens, each with its byte position.
//!
//! The lexer applies no grammar: it only distinguishes words, quoted phrases, operators and
//! brackets.
//! Which words are field names, values or range bounds is the parser's decision.
//!
//! # Notes
//!
//! - A word ends at white space (`char::is_whitespace`, close to the Java
//!   `Character.isWhitespace` that AWS names) or at one of `( ) [ ] { } : < > "`. A backslash
//!   makes the next character part of the word, whatever it is.
//! - `-` at the start of a word is the exclusion operator, unless a digit or `.` follows, so
//!   `-5` stays a negative number.
//! - AWS lists `` ` @ # % \ / ' ; , `` as unsupported. Outside quotes this lexer rejects them,
//!   and also `^ ~ + ! & |`, which Lucene uses for boosts, fuzzy search and operators that AWS
//!   does not document. A backslash or quotes make any of them an ordinary character.

use super::error::QueryError;

/// Characters that are rejected outside quotes unless escaped.
const UNSUPPORTED: &[char] = &[
    '`', '@', '#', '%', '/', '\'', ';', ',', '^', '~', '+', '!', '&', '|',
];

/// Returns true for a character that must be quoted or escaped in a word.
pub(crate) fn is_unsupported(ch: char) -> bool {
    UNSUPPORTED.contains(&ch)
}

/// Characters that end a word.
const DELIMITERS: &[char] = &['(', ')', '[', ']', '{', '}', ':', '<', '>', '"'];

/// One character of a word, remembering whether a backslash escaped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WordChar {
    pub(crate) ch: char,
    pub(crate) escaped: bool,
    /// Byte offset of the character (of its backslash, when escaped).
    pub(crate) position: usize,
}

/// An unquoted word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) chars: Vec<WordChar>,
}

impl Word {
    /// Returns the characters without escapes.
    pub(crate) fn text(&self) -> String {
        self.chars.iter().map(|c| c.ch).collect()
    }

    /// Returns true when the word is exactly `keyword`, with no escaped character.
    pub(crate) fn is_plain(&self, keyword: &str) -> bool {
        self.chars.iter().all(|c| !c.escaped) && self.chars.iter().map(|c| c.ch).eq(keyword.chars())
    }
}

/// The kind of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Word(Word),
    /// A quoted phrase, without quotes and escapes.
    Phrase(String),
    And,
    Or,
    Not,
    Minus,
    Colon,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
    OpenParen,
    CloseParen,
    OpenBracket,
    CloseBracket,
    OpenBrace,
    CloseBrace,
}

/// A token and the byte offset where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) position: usize,
}

impl Token {
    /// Describes the token for the `found` part of an error.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Word(word) => format!("'{}'", word.text()),
            TokenKind::Phrase(text) => format!("\"{text}\""),
            TokenKind::And => "'AND'".to_owned(),
            TokenKind::Or => "'OR'".to_owned(),
            TokenKind::Not => "'NOT'".to_owned(),
            TokenKind::Minus => "'-'".to_owned(),
            TokenKind::Colon => "':'".to_owned(),
            TokenKind::Greater => "'>'".to_owned(),
            TokenKind::GreaterOrEqual => "'>='".to_owned(),
            TokenKind::Less => "'<'".to_owned(),
            TokenKind::LessOrEqual => "'<='".to_owned(),
            TokenKind::OpenParen => "'('".to_owned(),
            TokenKind::CloseParen => "')'".to_owned(),
            TokenKind::OpenBracket => "'['".to_owned(),
            TokenKind::CloseBracket => "']'".to_owned(),
            TokenKind::OpenBrace => "'{'".to_owned(),
            TokenKind::CloseBrace => "'}'".to_owned(),
        }
    }
}

/// Splits `query` into tokens.
///
/// # Errors
///
/// Returns a [`QueryError`] for an unsupported character, an unclosed quote or a backslash at
/// the end of the query.
pub(crate) fn tokenize(query: &str) -> Result<Vec<Token>, QueryError> {
    let mut tokens = Vec::new();
    let mut chars = query.char_indices().peekable();
    while let Some(&(position, ch)) = chars.peek() {
        if ch.is_whitespace() {
            chars.next();
            continue;
        }
        let single = match ch {
            '(' => Some(TokenKind::OpenParen),
            ')' => Some(TokenKind::CloseParen),
            '[' => Some(TokenKind::OpenBracket),
            ']' => Some(TokenKind::CloseBracket),
            '{' => Some(TokenKind::OpenBrace),
            '}' => Some(TokenKind::CloseBrace),
            ':' => Some(TokenKind::Colon),
            _ => None,
        };
        if let Some(kind) = single {
            chars.next();
            tokens.push(Token { kind, position });
            continue;
        }
        let kind = match ch {
            '<' | '>' => {
                chars.next();
                let or_equal = chars.next_if(|&(_, next)| next == '=').is_some();
                match (ch, or_equal) {
                    ('<', false) => TokenKind::Less,
                    ('<', true) => TokenKind::LessOrEqual,
                    (_, false) => TokenKind::Greater,
                    (_, true) => TokenKind::GreaterOrEqual,
                }
            }
            '"' => {
                chars.next();
                TokenKind::Phrase(read_phrase(&mut chars, position)?)
            }
            '-' if !starts_number(&query[position + 1..]) => {
                chars.next();
                TokenKind::Minus
            }
            _ => keyword_or_word(read_word(&mut chars)?),
        };
        tokens.push(Token { kind, position });
    }
    Ok(tokens)
}

type Chars<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

fn starts_number(rest: &str) -> bool {
    rest.starts_with(|c: char| c.is_ascii_digit() || c == '.')
}

fn keyword_or_word(word: Word) -> TokenKind {
    if word.is_plain("AND") {
        TokenKind::And
    } else if word.is_plain("OR") {
        TokenKind::Or
    } else if word.is_plain("NOT") {
        TokenKind::Not
    } else {
        TokenKind::Word(word)
    }
}

/// Reads a quoted phrase after its opening quote at `start`.
fn read_phrase(chars: &mut Chars<'_>, start: usize) -> Result<String, QueryError> {
    let mut text = String::new();
    loop {
        match chars.next() {
            None => {
                return Err(QueryError::new(
                    start,
                    "a closing '\"' for this phrase",
                    "end of query",
                ));
            }
            Some((_, '"')) => return Ok(text),
            Some((position, '\\')) => text.push(escaped_char(chars, position)?),
            Some((_, ch)) => text.push(ch),
        }
    }
}

fn escaped_char(chars: &mut Chars<'_>, backslash: usize) -> Result<char, QueryError> {
    match chars.next() {
        Some((_, ch)) => Ok(ch),
        None => Err(QueryError::new(
            backslash,
            "a character after '\\'",
            "end of query",
        )),
    }
}

/// Reads a word; the caller has checked that the next character starts one.
fn read_word(chars: &mut Chars<'_>) -> Result<Word, QueryError> {
    let mut word = Word { chars: Vec::new() };
    while let Some(&(position, ch)) = chars.peek() {
        if ch.is_whitespace() || DELIMITERS.contains(&ch) {
            break;
        }
        chars.next();
        if ch == '\\' {
            let escaped = escaped_char(chars, position)?;
            word.chars.push(WordChar {
                ch: escaped,
                escaped: true,
                position,
            });
            continue;
        }
        if UNSUPPORTED.contains(&ch) {
            return Err(QueryError::new(
                position,
                "a term character (quote or escape this one with '\\')",
                format!("unsupported character '{ch}'"),
            ));
        }
        word.chars.push(WordChar {
            ch,
            escaped: false,
            position,
        });
    }
    Ok(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(query: &str) -> Vec<TokenKind> {
        tokenize(query)
            .expect("query tokenizes")
            .into_iter()
            .map(|token| token.kind)
            .collect()
    }

    #[test]
    fn comparison_operators_take_an_equals_sign() {
        assert_eq!(
            kinds("a>=1 b<=2 c>3 d<4")
                .into_iter()
                .filter(|kind| !matches!(kind, TokenKind::Word(_)))
                .collect::<Vec<_>>(),
            vec![
                TokenKind::GreaterOrEqual,
                TokenKind::LessOrEqual,
                TokenKind::Greater,
                TokenKind::Less
            ]
        );
    }

    #[test]
    fn minus_before_digit_is_part_of_number() {
        let tokens = kinds("-5 -plasma");
        assert!(matches!(&tokens[0], TokenKind::Word(word) if word.text() == "-5"));
        assert_eq!(tokens[1], TokenKind::Minus);
    }

    #[test]
    fn escaped_keyword_is_a_word() {
        let tokens = kinds(r"\AND AND");
        assert!(matches!(&tokens[0], TokenKind::Word(word) if word.text() == "AND"));
        assert_eq!(tokens[1], TokenKind::And);
    }

    #[test]
    fn positions_are_byte_offsets() {
        let tokens = tokenize("é:(x)").expect("query tokenizes");
        let positions: Vec<usize> = tokens.iter().map(|token| token.position).collect();
        assert_eq!(positions, vec![0, 2, 3, 4, 5]);
    }
}
