import Foundation
import JobFarmTesting
import JobProtocol
import Testing

/// The JSON number path: float32 printed with the shortest text that reads back to the same float32, and decimal
/// text read to the correctly rounded double without `strtod` where it can be.
@Suite("JSON numbers: shortest float32 text and the fast reader")
struct FloatTextTests {
    /// Random finite float32s from random bit patterns (every exponent, subnormals included), plus the edges.
    static func sample(count: Int, seed: UInt64) -> [Float] {
        var state = seed
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var values: [Float] = [
            0, -0.0, 1, -1, 0.1, 0.2, 0.3, 1.0 / 3, 2.5, 100, 1e7, 16_777_216, 16_777_217, 1e10, 3.4028235e38, -3.4028235e38,
            .leastNormalMagnitude, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .greatestFiniteMagnitude,
            Float(bitPattern: 0x007F_FFFF), Float(bitPattern: 0x0080_0001), 1e-5, 9.999999e-6, 123456789, 1e9, 999999940,
            8.589973e9, 2.3509886e-38, 6.7108864e7, 1.1920929e-7,
        ]
        while values.count < count {
            let bits = UInt32(truncatingIfNeeded: next())
            let value = Float(bitPattern: bits)
            if value.isFinite { values.append(value) }
            // Half of them from an ordinary range, where inference values live.
            values.append(Float(Double(next() % 2_000_000_000) / 1e8 - 10))
        }
        return values
    }

    /// Significant digits of a decimal text (no sign, exponent or leading/trailing zeros).
    static func significantDigits(_ text: String) -> Int {
        let mantissa = text.split(whereSeparator: { $0 == "e" || $0 == "E" }).first.map(String.init) ?? text
        var digits = mantissa.filter(\.isNumber)
        while digits.hasPrefix("0") { digits.removeFirst() }
        while digits.hasSuffix("0") { digits.removeLast() }
        return max(1, digits.count)
    }

    @Test(.timeLimit(.minutes(2)))
    func aMillionFloatsReadBackBitIdenticalWithTheShortestDigits() throws {
        let values = Self.sample(count: 1_000_000, seed: 42)
        var buffer = [UInt8](repeating: 0, count: FloatText.maxFloatLength)
        var failures: [String] = []
        for (index, value) in values.enumerated() {
            let count = buffer.withUnsafeMutableBufferPointer { FloatText.write(value, to: $0.baseAddress!) }
            // Through the farm's JSON reader (a double), then to float32: what a JSON client does.
            let read = buffer.withUnsafeBufferPointer { FloatText.parseDouble(UnsafeBufferPointer(rebasing: $0[0..<count])) }
            guard let read, Float(read).bitPattern == value.bitPattern else {
                failures.append("\(value.bitPattern): \(String(decoding: buffer[0..<count], as: UTF8.self)) reads as \(read.map { "\(Float($0))" } ?? "nothing")")
                if failures.count > 10 { break }
                continue
            }
            // No longer than Swift's own shortest text (checked on a sample: it makes a String per value).
            if index % 16 == 0 {
                let text = String(decoding: buffer[0..<count], as: UTF8.self)
                #expect(Float(text)?.bitPattern == value.bitPattern, "\(text)")
                let ours = Self.significantDigits(text), swift = Self.significantDigits(value.description)
                if ours > swift { failures.append("\(value.description): \(text) has \(ours) digits, Swift's \(swift)") }
            }
        }
        #expect(failures.isEmpty, "\(failures.prefix(10))")
    }

    @Test func edgeValuesAreWrittenAsExpected() throws {
        #expect(FloatText.string(0) == "0")
        #expect(FloatText.string(-0.0) == "-0")
        #expect(FloatText.string(0.1) == "0.1")
        #expect(FloatText.string(-2.5) == "-2.5")
        #expect(FloatText.string(16_777_216) == "16777216")
        #expect(FloatText.string(1e10) == "1e10")
        #expect(FloatText.string(1e-5) == "0.00001")
        #expect(FloatText.string(1.5e-7) == "1.5e-7")
        #expect(FloatText.string(.greatestFiniteMagnitude) == "3.4028235e38")
        #expect(FloatText.string(.leastNonzeroMagnitude) == "1e-45")
        #expect(FloatText.string(.nan) == "null")
        #expect(FloatText.string(.infinity) == "null")
        // What JSONValueEncoder writes for a Float and for a FloatMatrix.
        #expect(try JSONValueEncoder().encodeText([Float(0.1), 1e-45]) == "[0.1,1e-45]")
        #expect(try JSONValueEncoder().encodeText(FloatMatrix(rows: 2, columns: 2, values: [1, -0.5, 0.25, 3e20])) == "[[1,-0.5],[0.25,3e20]]")
        let binary = FloatMatrix(rows: 1, columns: 2, values: [1, 2], encoding: .float32Base64)
        #expect(try JSONValueEncoder().encodeText(binary) == #"{"dtype":"float32","shape":[1,2],"data":"AACAPwAAAEA="}"#)
        #expect(try JSONValueEncoder().encode(binary) == binary.jsonValue)
    }

    @Test(.timeLimit(.minutes(1)))
    func theReaderAgreesWithStrtodOnRandomDecimals() throws {
        var state: UInt64 = 7
        func next(_ bound: UInt64) -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return (state >> 33) % bound
        }
        var mismatches: [String] = []
        for _ in 0..<200_000 {
            var text = next(2) == 0 ? "-" : ""
            let integerDigits = Int(next(12))
            text += integerDigits == 0 ? "0" : String(1 + next(9)) + String((1..<integerDigits).map { _ in Character(String(next(10))) })
            if next(3) > 0 { text += "." + String((0...next(22)).map { _ in Character(String(next(10))) }) }
            if next(3) == 0 { text += "e" + (next(2) == 0 ? "-" : "+") + String(next(340)) }
            let ours = try JSONParser.parse(text)
            let theirs = strtod(text, nil)
            if ours != .number(theirs) || ours.doubleValue?.sign != theirs.sign {
                mismatches.append("\(text): \(ours.jsonText) vs \(theirs)")
                if mismatches.count > 10 { break }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches)")
    }

    @Test("a sample of the texts read by NumPy's np.float32(text) gives the same float32 bits")
    func numpyReadsTheSameFloats() throws {
        let python = try #require(ProcessInfo.processInfo.environment["JOBFARM_TEST_PYTHON"],
                                  "JOBFARM_TEST_PYTHON must name a python3 with NumPy: scripts/test sets it (ensure_numpy in scripts/lib.sh)")
        let values = Self.sample(count: 20_000, seed: 9)
        let texts = values.map { FloatText.string($0) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("float-text-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let inputFile = directory.appendingPathComponent("texts"), outputFile = directory.appendingPathComponent("bits")
        try Data((texts.joined(separator: "\n") + "\n").utf8).write(to: inputFile)
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", "import sys, numpy as np\nfor line in sys.stdin: print(int(np.float32(line.strip()).view(np.uint32)))"]
        process.standardInput = try FileHandle(forReadingFrom: inputFile)
        process.standardOutput = try FileHandle(forWritingTo: outputFile)
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let data = try Data(contentsOf: outputFile)
        let bits = String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { UInt32($0) }
        #expect(bits.count == values.count)
        let wrong = zip(zip(values, texts), bits).filter { $0.0.0.bitPattern != $0.1 }.prefix(5).map { "\($0.0.1) → \($0.1)" }
        #expect(wrong.isEmpty, "\(wrong)")
    }
}
