extension Sequence where Element == UInt8 {
    /// The bytes as lowercase hexadecimal, two digits each (a SHA-256 digest's usual text form). Written without
    /// `String(format:)`, which costs a Foundation formatter per byte: this runs on every authenticated request.
    var lowercaseHex: String {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
