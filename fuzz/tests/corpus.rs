//! Every seed input, and every input that once crashed a target (kept in the corpus as
//! `regress-*`), run once through its target: they must pass on every build, not only while
//! fuzzing.

#[test]
fn every_corpus_input_passes_its_target() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut ran = 0;
    for t in fuzz::TARGETS {
        let dir = root.join(t.name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seed inputs for {}", t.name);
        for f in files {
            let data = std::fs::read(&f).expect("read input");
            eprintln!("{} {}", t.name, f.display());
            (t.run)(&data);
            ran += 1;
        }
    }
    assert!(ran > 100, "only {ran} inputs");
}
