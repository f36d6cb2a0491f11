//! The fuzz corpus (fuzz/corpus/decode) replayed on stable as an ordinary test, so every input
//! the fuzzer ever kept is checked on each run.

use std::path::Path;

#[test]
fn decode_corpus_holds_the_fuzz_property() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode");
    let mut count = 0;
    let mut decodable = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| p9_core::arbitrary::check_decode(&data));
        assert!(
            result.is_ok(),
            "corpus input {} breaks the property",
            path.display()
        );
        if p9_core::Header::parse(&data).is_ok() {
            decodable += 1;
        }
        count += 1;
    }
    // A corpus that went missing or shrank to nothing would make this test vacuous.
    assert!(
        count >= 100,
        "only {count} corpus inputs in {}",
        dir.display()
    );
    assert!(
        decodable >= 50,
        "only {decodable} corpus inputs have a valid header"
    );
}
