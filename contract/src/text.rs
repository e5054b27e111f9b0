//! Showing untrusted text (an agent's proposal, a value from a manifest, a build log) on an
//! operator's terminal: the one sanitiser both programs use.

/// What [`escape_controls`] leaves as it is: nothing, or the line breaks and tabs of a
/// multi-line text (a Dockerfile, an error carrying a build log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One line: `\n` and `\t` are escaped too, so a field cannot fake the lines after it.
    Line,
    /// Several lines: `\n` and `\t` stay.
    Block,
}

/// `text` with control and invisible formatting characters written as `\u{..}` escapes, for
/// showing untrusted text (an agent's proposal, an error quoting it, a build log) to the
/// operator: C0 (except `\n` and `\t` in a [`Layout::Block`]), DEL and C1, so no escape
/// sequence (ESC, CSI, OSC 52 clipboard writes) or carriage return reaches the terminal, and
/// the bidi overrides, zero-width and other format characters that make text read differently
/// from what it is. The one sanitiser for everything the launcher prints on an agent's behalf.
pub fn escape_controls(text: &str, layout: Layout) -> String {
    let kept = |c: char| layout == Layout::Block && matches!(c, '\n' | '\t');
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c.is_control() || is_invisible_format(c)) && !kept(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Unicode format characters (category Cf) and the line/paragraph separators: they draw
/// nothing, or reorder or hide the text around them.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{ad}'
        | '\u{600}'..='\u{605}'
        | '\u{61c}'
        | '\u{6dd}'
        | '\u{70f}'
        | '\u{890}'..='\u{891}'
        | '\u{8e2}'
        | '\u{180e}'
        | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206f}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}'
        | '\u{e0000}'..='\u{e007f}')
}
