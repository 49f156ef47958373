import Compute
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import MLJobs
import ModelStore
import Testing

/// Plain `name` and `name:latest` keep the precision of the name's first version; `name:latest@int8` asks for another.
@Suite("Model references")
struct ModelReferenceTests {
    @Test func referencesParse() throws {
        let plain = try ModelReference(parsing: "m")
        #expect(plain.selector == .latest && plain.precision == nil && plain.description == "m:latest")
        #expect(try ModelReference(parsing: "m:latest").precision == nil)
        let int8 = try ModelReference(parsing: "m:latest@int8")
        #expect(int8.selector == .latest && int8.precision == "int8" && int8.description == "m:latest@int8")
        #expect(try ModelReference(parsing: "m:latest@FP16").precision == "fp16")
        #expect(try ModelReference(parsing: "m:7").selector == .version(7))
        #expect(try ModelReference(parsing: "m:production").selector == .alias("production"))
        for (text, words) in [("m:7@int8", "only latest takes a precision"), ("m@int8", "goes after latest, as in m:latest@int8"),
                              ("m:latest@fp8", "precision 'fp8' is not one of fp32, fp16, int8, mixed")] {
            do {
                _ = try ModelReference(parsing: text)
                Issue.record("\(text) parsed")
            } catch {
                #expect("\(error)".contains(words), "\(text): \(error)")
            }
        }
    }

    @Test(.enabled(if: TestRedis.available), .timeLimit(.minutes(1)))
    func aQuantizedVersionNeverReplacesWhatPlainNamesRun() async throws {
        let farm = try mlTestFarm()
        let registry = ModelRegistry(client: try testClient(), namespace: farm.configuration.namespace)
        let model = try randomModel()
        _ = try await registry.push(model: model, name: "m")                                                      // 1 fp32
        _ = try await registry.push(model: try Quantization.convert(model, to: .int8).model, name: "m")           // 2 int8
        _ = try await registry.push(model: try Quantization.convert(model, to: .fp16).model, name: "m")           // 3 fp16
        #expect(try await registry.resolve("m").version == 1, "the int8 and fp16 versions do not replace plain m")
        #expect(try await registry.resolve("m:latest").precision == "fp32")
        #expect(try await registry.resolve("m:latest@int8").version == 2)
        #expect(try await registry.resolve("m:latest@fp16").version == 3)
        _ = try await registry.push(model: model, name: "m")                                                      // 4 fp32
        #expect(try await registry.resolve("m").version == 4)
        // Aliases point at any version, whatever its precision.
        try await registry.setAlias("production", name: "m", version: 2)
        #expect(try await registry.resolve("m:production").precision == "int8")
        do {
            _ = try await registry.resolve("m:latest@mixed")
            Issue.record("a precision the name has no version of resolved")
        } catch {
            #expect("\(error)".contains("model 'm' has no mixed version (it has 1 fp32, 2 int8, 3 fp16, 4 fp32)"), "\(error)")
        }
        // A name whose first version is int8 stays int8.
        _ = try await registry.push(model: try Quantization.convert(model, to: .int8).model, name: "q")
        _ = try await registry.push(model: model, name: "q")
        #expect(try await registry.resolve("q").version == 1)
        #expect(try await registry.resolve("q:latest@fp32").version == 2)
        try await deleteNamespace(registry.client, farm.configuration.namespace)
    }

    /// A NaN in a training set names the dataset and the line of the file, as a CSV parse error does (blank lines
    /// count: the numbering is the file's).
    @Test(.enabled(if: TestRedis.available), .timeLimit(.minutes(1)))
    func aNaNInATrainingSetNamesTheFileLine() async throws {
        let farm = try mlTestFarm()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nan-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let csv = directory.appendingPathComponent("readings.csv")
        var lines = ["a,b,label"]
        for row in 0..<40 { lines.append("\(row % 7),\(row % 5),\(row % 2)") }
        lines.insert("", at: 3)                       // a blank line: rows and lines part ways
        lines[30] = "3,nan,1"                         // file line 31
        try lines.joined(separator: "\n").write(to: csv, atomically: true, encoding: .utf8)
        let npy = directory.appendingPathComponent("readings.npy")
        var values = (0..<30).map { Float($0 % 3) }   // 10 rows × 3 columns, label last
        values[7 * 3 + 1] = .infinity                 // row 7, column 1
        try NpyArray(shape: [10, 3], storage: .float32(values)).write(to: npy)
        try await withMLWorker(farm: farm) { _ in
            let status = try await runJob(farm, "train", #"{"dataset": "\#(csv.path)", "name": "nan-model", "labelColumn": "label", "epochs": 1}"#)
            #expect(status.state == .dead && status.reason == "non_retryable")
            #expect(status.error?.contains("dataset \(csv.path): CSV line 31 column \"b\" is nan") == true, "\(status.error ?? "")")
            let binary = try await runJob(farm, "train", #"{"dataset": "\#(npy.path)", "name": "nan-model", "labelColumn": "last", "epochs": 1}"#)
            #expect(binary.error?.contains("dataset \(npy.path): .npy row 7 column 1 is inf") == true, "\(binary.error ?? "")")
        }
        try await deleteNamespace(try testClient(), farm.configuration.namespace)
    }
}
