//! `flowstate key-group` end to end as a process: the key group and owning subtask it names
//! are the engine's routing, computed here through `flowstate_api` for keys of every codec,
//! max parallelism and parallelism; bad keys and arguments are refused clearly.

mod common;

use std::collections::BTreeSet;

use common::{assert_help_has_examples, fails, json, ok, run, str_of, u64_of};
use flowstate_api::key_groups::{key_group_range_for_operator, operator_index_for_key_group};
use flowstate_api::{Codec, KeyContext, KeyGroupRange, MaxParallelism, Parallelism, SerdeCodec};

#[test]
fn key_group_matches_the_engine_routing() {
    let strings = ["user-42", "", "ünïcödé", "-starts-with-a-dash", "x"];
    let numbers = [0u64, 1, 1234, u64::MAX];
    let hexes = ["", "00", "0x07757365722d3432", "DEADbeef"];
    let mut seen_groups = BTreeSet::new();
    for max in [1u32, 7, 128, 32768] {
        let max_p = MaxParallelism::new(max).expect("max");
        for parallelism in [None, Some(1), Some(3.min(max)), Some(max)] {
            let mut cases: Vec<(String, &str, Vec<u8>)> = Vec::new();
            for key in strings {
                let bytes = SerdeCodec::<String>::new()
                    .to_bytes(&key.to_string())
                    .expect("encodes");
                cases.push((key.to_string(), "string", bytes));
            }
            for n in numbers {
                let bytes = SerdeCodec::<u64>::new().to_bytes(&n).expect("encodes");
                cases.push((n.to_string(), "u64", bytes));
            }
            for h in hexes {
                let digits = h.trim_start_matches("0x");
                let bytes = (0..digits.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
                    .collect();
                cases.push((h.to_string(), "hex", bytes));
            }
            for (key, codec, bytes) in cases {
                let context = match codec {
                    "string" => {
                        KeyContext::for_key(&SerdeCodec::<String>::new(), &key, max_p).expect("ok")
                    }
                    "u64" => KeyContext::for_key(
                        &SerdeCodec::<u64>::new(),
                        &key.parse::<u64>().expect("a number"),
                        max_p,
                    )
                    .expect("ok"),
                    _ => KeyContext::new(bytes.clone(), max_p),
                };
                assert_eq!(context.key(), bytes.as_slice());
                let max_arg = max.to_string();
                let mut args = vec![
                    "key-group",
                    key.as_str(),
                    "--codec",
                    codec,
                    "--max-parallelism",
                    &max_arg,
                    "--json",
                ];
                let p_arg = parallelism.map(|p| p.to_string());
                if let Some(p) = &p_arg {
                    args.extend(["--parallelism", p]);
                }
                let report = json(&args);
                let kg = context.key_group();
                assert_eq!(
                    u64_of(&report["key_group"]),
                    u64::from(kg.get()),
                    "{args:?}"
                );
                seen_groups.insert((max, kg.get()));
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(str_of(&report["key_bytes"]), hex);
                assert_eq!(str_of(&report["codec"]), codec);
                assert_eq!(u64_of(&report["max_parallelism"]), u64::from(max));
                match parallelism {
                    None => {
                        assert!(report["subtask"].is_null());
                        assert!(report["subtask_key_groups"].is_null());
                    }
                    Some(p) => {
                        let p = Parallelism::new(p).expect("p");
                        let owner = operator_index_for_key_group(max_p, p, kg);
                        assert_eq!(u64_of(&report["subtask"]), u64::from(owner), "{args:?}");
                        let range: KeyGroupRange =
                            key_group_range_for_operator(max_p, p, owner).expect("range");
                        assert!(range.contains(kg));
                        assert_eq!(
                            u64_of(&report["subtask_key_groups"]["start"]),
                            u64::from(range.start().get())
                        );
                        assert_eq!(
                            u64_of(&report["subtask_key_groups"]["end"]),
                            u64::from(range.end().get())
                        );
                    }
                }
            }
        }
    }
    // The keys spread over several key groups (a constant answer would not pass).
    assert!(seen_groups.iter().filter(|(m, _)| *m == 128).count() >= 5);
    // A string key and its bytes in hex land in the same place; the table says so.
    let human = ok(&[
        "key-group",
        "user-42",
        "--max-parallelism",
        "128",
        "--parallelism",
        "3",
    ]);
    let context = KeyContext::for_key(
        &SerdeCodec::<String>::new(),
        &"user-42".to_string(),
        MaxParallelism::new(128).expect("max"),
    )
    .expect("ok");
    let hex: String = context.key().iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        human.contains(&format!("key group  {} ", context.key_group())),
        "{human}"
    );
    assert!(human.contains(&hex), "{human}");
    let via_hex = json(&[
        "key-group",
        &hex,
        "--codec",
        "hex",
        "--max-parallelism",
        "128",
        "--json",
    ]);
    assert_eq!(
        u64_of(&via_hex["key_group"]),
        u64::from(context.key_group().get())
    );
}

/// Bad hex, a non-number for u64, a parallelism above the max: exit code 1 and an error
/// naming the problem; a max parallelism of 0 is the argument parser's (exit code 2).
#[test]
fn bad_keys_and_arguments_are_refused_clearly() {
    for (args, expected) in [
        (
            ["0x12zz", "--codec", "hex", "--max-parallelism", "128"],
            "'0x12zz' is not hex: 'z' at position 4",
        ),
        (
            ["abc", "--codec", "hex", "--max-parallelism", "128"],
            "odd number of digits",
        ),
        (
            ["-5", "--codec", "u64", "--max-parallelism", "128"],
            "'-5' is not a u64 key",
        ),
        (
            ["a", "--max-parallelism", "4", "--parallelism", "5"],
            "--parallelism 5 is above --max-parallelism 4",
        ),
    ] {
        let mut full = vec!["key-group"];
        full.extend(args);
        let err = fails(&full);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let out = run(&["key-group", "a", "--max-parallelism", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_has_examples() {
    assert_help_has_examples("key-group");
}
