use super::*;
use lab_protocol::plan::CommandRole;

fn command(exit: i32, expect: Vec<Expectation>) -> AdminCommand {
    AdminCommand {
        role: CommandRole::Checklist,
        at: None,
        line: "ls".into(),
        as_admin: true,
        cwd: None,
        bindings: Vec::new(),
        exit,
        expect,
        checklist_expect: Vec::new(),
        capture: None,
        not_run: None,
    }
}

fn output(exit: i32, stdout: &str) -> Output {
    Output {
        exit: Some(exit),
        stdout: stdout.into(),
        stderr: String::new(),
        timed_out: false,
    }
}

fn grep() -> String {
    which::which("grep")
        .expect("grep (GNU grep, apt-get install grep)")
        .display()
        .to_string()
}

#[test]
fn a_command_passes_only_as_expected() {
    let captured: BTreeMap<String, String> = [("sum".to_owned(), "abc".to_owned())].into();
    let grep = grep();
    let judged = |command: &AdminCommand, out: &Output| judge(&grep, command, out, &captured);
    let plain = command(0, vec![]);
    assert_eq!(judged(&plain, &output(0, "")), None);
    assert!(judged(&plain, &output(1, ""))
        .unwrap()
        .contains("exit 1 instead of 0"));
    let expecting = command(
        0,
        vec![
            Expectation::Contains {
                text: "@persist.".into(),
            },
            Expectation::Matches {
                pattern: "^[0-9]{8}T[0-9]{6}Z$".into(),
            },
        ],
    );
    assert_eq!(
        judged(
            &expecting,
            &output(0, "@persist.20270110T1417\n20270110T141651Z\n")
        ),
        None
    );
    assert!(judged(&expecting, &output(0, "@persist.x\n2027\n"))
        .unwrap()
        .contains("a line matches"));
    let equal = command(0, vec![Expectation::EqualsCaptured { name: "sum".into() }]);
    assert_eq!(judged(&equal, &output(0, "abc\n")), None);
    assert!(judged(&equal, &output(0, "abd\n"))
        .unwrap()
        .contains("\"abc\""));
    let unknown = command(
        0,
        vec![Expectation::EqualsCaptured {
            name: "none".into(),
        }],
    );
    assert!(judged(&unknown, &output(0, "x"))
        .unwrap()
        .contains("nothing was captured"));
    let bad = command(
        0,
        vec![Expectation::Matches {
            pattern: "(".into(),
        }],
    );
    assert!(judged(&bad, &output(0, "x")).unwrap().contains("grep -E"));
    let mut slow = output(0, "");
    slow.timed_out = true;
    assert!(judged(&plain, &slow).unwrap().contains("killed after"));
}

#[test]
fn long_output_is_clipped_on_a_character_boundary() {
    let text = "é".repeat(OUTPUT_LIMIT);
    let clipped = clip(&text);
    assert!(clipped.len() < text.len() && clipped.ends_with("bytes in all)"));
    assert_eq!(clip("short"), "short");
}

#[test]
fn the_checklists_own_expectations_decide_too() {
    use lab_protocol::expect::Expect;
    let grep = grep();
    let none = BTreeMap::new();
    let mut swapon = command(0, vec![]);
    swapon.checklist_expect = vec![
        Expect::Line {
            pattern: "/dev/dm-<n> partition 34359734272".into(),
        },
        Expect::NoLine {
            pattern: "/dev/vda3 <*>".into(),
        },
    ];
    assert_eq!(
        judge(
            &grep,
            &swapon,
            &output(0, "/dev/dm-0 partition 34359734272\n"),
            &none
        ),
        None
    );
    let problem = judge(
        &grep,
        &swapon,
        &output(0, "/dev/vda3 partition 34359734272\n"),
        &none,
    )
    .unwrap();
    assert!(
        problem.starts_with("not as the checklist expects: no line matches"),
        "{problem}"
    );
    // A tampered expectation (a size the layout does not have) fails.
    let mut tampered = swapon.clone();
    tampered.checklist_expect[0] = Expect::Line {
        pattern: "/dev/dm-<n> partition 1".into(),
    };
    assert!(judge(
        &grep,
        &tampered,
        &output(0, "/dev/dm-0 partition 34359734272\n"),
        &none
    )
    .is_some());
    // The exit status is checked first, with stderr's last line.
    let mut failed = output(1, "");
    failed.stderr =
        "cp: cannot create regular file '/persist/a/b': No such file or directory\n".into();
    let problem = judge(&grep, &swapon, &failed, &none).unwrap();
    assert!(
        problem.contains("exit 1 instead of 0 (stderr: cp: cannot create"),
        "{problem}"
    );
}
