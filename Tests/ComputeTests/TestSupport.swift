import Foundation
@testable import Compute

/// Locates committed fixtures relative to this source file (no Bundle resources needed).
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static var digitsCSV: String { packageRoot.appendingPathComponent("data/digits/digits.csv").path }

    static func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    static func json(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: url(name))
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }

    static func matrix(_ any: Any?) -> [[Double]] {
        (any as? [[Any]] ?? []).map { row in row.map { ($0 as? NSNumber)?.doubleValue ?? .nan } }
    }

    static func vector(_ any: Any?) -> [Double] {
        (any as? [Any] ?? []).map { ($0 as? NSNumber)?.doubleValue ?? .nan }
    }
}

/// A fresh temporary file URL.
func temporaryURL(_ suffix: String) -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("compute-test-\(UUID().uuidString)\(suffix)")
}

/// Relative error ‖a − b‖∞ / max(‖b‖∞, tiny): the max-norm relative error.
func maxNormRelativeError(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    var num = 0.0, den = 0.0
    for i in 0..<a.count { num = max(num, abs(a[i] - b[i])); den = max(den, abs(b[i])) }
    return num / max(den, 1e-300)
}

/// Extracts the message of a thrown ComputeError (nil if another error or none).
func computeError(_ body: () throws -> Void) -> ComputeError? {
    do { try body() } catch let e as ComputeError { return e } catch { return nil }
    return nil
}
