//! The registry(4) index format of Inferno and the Octopus, and queries over it: which
//! services a mux may serve.
//!
//! An index has one service per line: the service's name, then attribute and value words,
//! quoted as Inferno's `str->quoted` writes them (a word with spaces or quotes goes in single
//! quotes, a quote inside doubled); blank lines and lines starting with `#` are skipped:
//!
//! ```text
//! tcp!fs1!564 name data addr tcp!fs1!564 aname /export loc home
//! tcp!fs2!564 name data addr tcp!fs2!564 aname /export path 'sub dir' loc office
//! ```
//!
//! A mux needs `addr` (where to dial); `aname` (what to attach to) and `path` (a directory to
//! walk to from there, which clients see as the root) are optional. A [`Query`] is attribute
//! and value pairs, as mux(4) takes them: `*` matches any value of an attribute the service
//! has, and `$NAME` stands for the environment variable NAME.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// One registered service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The first word of its line.
    pub name: String,
    /// Its attribute and value pairs, in order.
    pub attrs: Vec<(String, String)>,
}

impl Service {
    /// The value of `attr`, if the service has it (the first, if given twice).
    pub fn get(&self, attr: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, _)| a == attr)
            .map(|(_, v)| v.as_str())
    }

    /// Where to dial it (`addr`).
    pub fn addr(&self) -> Option<&str> {
        self.get("addr")
    }

    /// What to attach to (`aname`; empty when not given).
    pub fn aname(&self) -> &str {
        self.get("aname").unwrap_or("")
    }

    /// The names to walk from the attach to the root clients see (`path`, split at `/`).
    pub fn path(&self) -> Vec<&str> {
        self.get("path")
            .unwrap_or("")
            .split('/')
            .filter(|n| !n.is_empty() && *n != ".")
            .collect()
    }
}

/// A line of an index that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryError {
    /// 1-based.
    pub line: usize,
    pub what: String,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

/// The words of one line, unquoted.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c != '\'' {
                word.push(c);
                continue;
            }
            // Quoted: up to the closing quote; a doubled quote is a quote.
            loop {
                match chars.next() {
                    None => return Err("a quote is not closed".into()),
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        word.push('\'');
                    }
                    Some('\'') => break,
                    Some(c) => word.push(c),
                }
            }
        }
        words.push(word);
    }
}

/// `word` quoted so that [`words`] reads it back (the way Inferno's `str->quoted` writes it).
pub fn quote(word: &str) -> String {
    if !word.is_empty() && !word.chars().any(|c| c.is_whitespace() || c == '\'') {
        return word.to_string();
    }
    let mut q = String::from("'");
    for c in word.chars() {
        if c == '\'' {
            q.push('\'');
        }
        q.push(c);
    }
    q.push('\'');
    q
}

/// Every service of an index.
pub fn parse_index(text: &str) -> Result<Vec<Service>, RegistryError> {
    let mut services = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |what: String| RegistryError { line: i + 1, what };
        if line.trim_start().starts_with('#') {
            continue;
        }
        let mut w = words(line).map_err(err)?;
        if w.is_empty() {
            continue;
        }
        let name = w.remove(0);
        if !w.len().is_multiple_of(2) {
            return Err(err(alloc::format!(
                "service {name}: attribute {:?} has no value",
                w[w.len() - 1]
            )));
        }
        let attrs = w.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
        services.push(Service { name, attrs });
    }
    Ok(services)
}

/// Attribute and value pairs a service must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, Match)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Match {
    Any,
    Value(String),
}

impl Query {
    /// A query from `attr val ...` words (mux(4)'s arguments). A value `*` matches any value;
    /// `$NAME` is replaced by `env(NAME)`, and an unset one is an error (a query that silently
    /// matched nothing, or everything, would surprise).
    pub fn new<S: AsRef<str>>(
        words: &[S],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Query, String> {
        if !words.len().is_multiple_of(2) {
            return Err(alloc::format!(
                "attribute {:?} has no value (a query is attr val pairs)",
                words[words.len() - 1].as_ref()
            ));
        }
        let mut pairs = Vec::new();
        for p in words.chunks(2) {
            let (attr, val) = (p[0].as_ref(), p[1].as_ref());
            let m = match val {
                "*" => Match::Any,
                v if v.starts_with('$') && v.len() > 1 => match env(&v[1..]) {
                    Some(value) => Match::Value(value),
                    None => {
                        return Err(alloc::format!(
                            "{attr} {v}: the environment has no {}",
                            &v[1..]
                        ))
                    }
                },
                v => Match::Value(v.to_string()),
            };
            pairs.push((attr.to_string(), m));
        }
        Ok(Query { pairs })
    }

    /// Whether `s` has every attribute of the query with a matching value.
    pub fn matches(&self, s: &Service) -> bool {
        self.pairs.iter().all(|(attr, m)| {
            s.attrs.iter().any(|(a, v)| {
                a == attr
                    && match m {
                        Match::Any => true,
                        Match::Value(want) => v == want,
                    }
            })
        })
    }

    /// The services of `index` the query matches, in index order.
    pub fn select<'a>(&self, index: &'a [Service]) -> Vec<&'a Service> {
        index.iter().filter(|s| self.matches(s)).collect()
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (attr, m)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match m {
                Match::Any => write!(f, "{} *", quote(attr))?,
                Match::Value(v) => write!(f, "{} {}", quote(attr), quote(v))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// mux(4)'s example registry.
    const MUX_EXAMPLE: &str = "\
pc!where arch Plan9386 loc none path /term/pc/where name where
pc!who arch Plan9386 loc none path /term/pc/who name who
pc!what arch Plan9386 loc none path /term/pc/what name what
Atlantian.local!who loc home path /term/Atlantian.local/who name who
Atlantian.local!what loc home path /term/Atlantian.local/what name what
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_manual_s_example_selects_as_it_says() {
        let index = parse_index(MUX_EXAMPLE).unwrap();
        assert_eq!(index.len(), 5);
        let who = Query::new(&["name", "who"], no_env).unwrap();
        let names: Vec<&str> = who.select(&index).iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pc!who", "Atlantian.local!who"]);
        // `loc '$user'`: the value comes from the environment.
        let env = |v: &str| (v == "user").then(|| String::from("home"));
        let uwho = Query::new(&["name", "who", "loc", "$user"], env).unwrap();
        let names: Vec<&str> = uwho
            .select(&index)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["Atlantian.local!who"]);
        assert_eq!(index[1].path(), ["term", "pc", "who"]);
        assert_eq!(index[1].addr(), None);
    }

    #[test]
    fn quoting_reads_back_what_it_writes() {
        for w in [
            "plain",
            "two words",
            "it's",
            "''",
            "",
            "tab\there",
            "a'b c'd",
        ] {
            let line = alloc::format!("svc attr {}", quote(w));
            let back = words(&line).unwrap();
            assert_eq!(back, vec!["svc", "attr", w], "{line}");
        }
        assert_eq!(words("a'b c'd e").unwrap(), ["ab cd", "e"]);
        assert!(words("svc path 'open").is_err());
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = parse_index("# services\n\nsvc addr tcp!a!564\nsvc2 addr\n").unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.what.contains("\"addr\" has no value"), "{e}");
        let e = parse_index("svc path 'x\n").unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn stars_and_missing_variables() {
        let index = parse_index("a addr tcp!a!1 loc x\nb addr tcp!b!1\n").unwrap();
        let q = Query::new(&["loc", "*"], no_env).unwrap();
        assert_eq!(q.select(&index).len(), 1, "* needs the attribute");
        assert!(Query::new(&["loc", "$nope"], no_env)
            .unwrap_err()
            .contains("no nope"));
        assert!(Query::new(&["loc"], no_env).is_err());
        assert_eq!(
            Query::new(&[] as &[&str], no_env)
                .unwrap()
                .select(&index)
                .len(),
            2
        );
        let q = Query::new(&["loc", "two words"], no_env).unwrap();
        assert_eq!(q.to_string(), "loc 'two words'");
    }
}
