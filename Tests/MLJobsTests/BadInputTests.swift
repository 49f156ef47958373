import JobFarmTesting
import Compute
import Foundation
import JobProtocol
import JobQueue
import MLJobs
import ModelStore
import RedisClient
import Testing

/// Every bad input fails its job as non_retryable with a message naming the problem, and the worker lives on.
@Suite("Bad input", .enabled(if: TestRedis.available))
struct BadInputTests {
    @Test("each bad input dead-letters as non_retryable with a clear message; the worker keeps serving")
    func badInputs() async throws {
        let farm = try mlTestFarm()
        let model = try randomModel(inputs: 8, hidden: 16, outputs: 4)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mljobs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let ragged = directory.appendingPathComponent("ragged.csv")
        try "a,b,label\n1,2,0\n3,4,5,1\n".write(to: ragged, atomically: true, encoding: .utf8)

        try await withMLWorker(farm: farm) { environment in
            let good = try await environment.models.push(model: model, name: "tiny")
            // A version whose chunk is corrupted before any worker loaded it.
            let doomed = try await environment.models.push(model: try randomModel(seed: 99), name: "doomed")
            var garbage = RedisCommand("HSET", environment.models.blobs.key(doomed.sha256), "c:0")
            garbage.append(bytes: [UInt8](repeating: 7, count: 64))
            _ = try await environment.models.client.execute(garbage)
            // Versions whose stored bytes are not a valid safetensors file (bypassing push's checks).
            for (name, bytes) in [("lying", BadFiles.hugeHeaderLength), ("int16", BadFiles.unsupportedDType), ("overrun", BadFiles.offsetsPastEnd)] {
                let (sha, _, _) = try await environment.models.blobs.put(bytes)
                var record = good
                record.name = name
                record.version = 1
                record.sha256 = sha
                let json = String(decoding: try JSONEncoder().encode(record), as: UTF8.self)
                _ = try await environment.models.client.execute(RedisCommand("HSET", "\(farm.configuration.namespace):models:\(name):versions", "1", json))
            }

            let cases: [(kind: String, payload: String, expected: [String])] = [
                ("inference", #"{"model": "tiny", "inputs": [[1, 2, 3]]}"#, ["shape mismatch", "3 values", "takes 8"]),
                ("inference", #"{"model": "tiny", "inputs": [[1, 2, 3, 4, 5, 6, 7, "NaN"]]}"#, ["feature 7", "nan", "finite"]),
                ("inference", #"{"model": "tiny", "inputs": [[1, 2, 3, 4, 5, 6, 7, 1e39]]}"#, ["overflows float32"]),
                ("inference", #"{"model": "ghost", "inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}"#, ["model 'ghost' has no versions"]),
                ("inference", #"{"model": "tiny:staging", "inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}"#, ["no alias 'staging'"]),
                ("inference", #"{"model": "tiny:4", "inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}"#, ["no version 4"]),
                ("inference", #"{"model": "tiny", "inputs": [[1, 2, 3, 4, 5, 6, 7, 8]], "precision": "fp8"}"#, ["precision 'fp8'"]),
                ("inference", #"{"model": "doomed", "inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}"#, ["corrupt", "doomed:1", "chunk 0"]),
                ("inference", #"{"model": "lying", "inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}"#, ["invalid model", "header"]),
                ("inference", #"{"model": "int16", "inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}"#, ["I16"]),
                ("inference", #"{"model": "overrun", "inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}"#, ["invalid model"]),
                ("inference", #"{"inputs": [[1]]}"#, ["/model: required"]),
                ("batch_analysis", #"{"dataset": "/nonexistent/data.csv"}"#, ["'/nonexistent/data.csv' does not exist"]),
                ("batch_analysis", #"{"dataset": "farm:nothing"}"#, ["farm:nothing"]),
                ("batch_analysis", "{\"dataset\": \"\(ragged.path)\", \"labelColumn\": \"label\"}", ["ragged.csv", "line 3 has 4 fields"]),
                ("train", "{\"dataset\": \"data/digits/digits.csv\", \"name\": \"x\", \"labelColumn\": \"nope\"}", ["\"nope\" is not in the CSV header"]),
                ("quantize", #"{"model": "tiny", "precision": "int4"}"#, ["precision 'int4'"]),
                ("validate", #"{"candidate": "tiny", "dataset": "data/digits/digits.csv", "labelColumn": "target"}"#, ["shape mismatch", "64 feature columns", "takes 8"]),
            ]
            for (kind, payload, expected) in cases {
                let status = try await runJob(farm, kind, payload, timeout: .seconds(60))
                #expect(status.state == .dead, "\(kind) \(payload) ended \(status.state.rawValue)")
                #expect(status.reason == "non_retryable", "\(kind) \(payload): reason \(status.reason ?? "-")")
                #expect(status.attempts == 1, "not retried")
                let message = (status.error ?? "").lowercased()
                for word in expected {
                    #expect(message.contains(word.lowercased()), "\(kind) \(payload): '\(status.error ?? "")' should mention '\(word)'")
                }
            }
            // The worker lives on.
            let result = try await succeed(farm, "inference", #"{"model": "tiny", "inputs": [[1, 2, 3, 4, 5, 6, 7, 8]]}"#)
            #expect(result["predictions"]?.items.count == 1)
        }
    }
}
