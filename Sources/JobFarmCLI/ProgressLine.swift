import Foundation

/// Progress drawn on one line of standard error (the `--wait` of `status`, `batch status` and `pipeline status`).
enum ProgressLine {
    /// `width` cells, `filled` of them full: `████░░░░`.
    static func bar(filled: Int, width: Int = 30) -> String {
        let filled = min(max(0, filled), width)
        return String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
    }

    /// The bar of `done` out of `total`; a total of 0 is a full bar.
    static func bar(done: Int, of total: Int, width: Int = 30) -> String {
        bar(filled: total <= 0 ? width : done * width / total, width: width)
    }

    /// Replaces the line with `text`.
    static func show(_ text: String) { FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8)) }

    /// Clears the line.
    static func clear() { show("") }
}
