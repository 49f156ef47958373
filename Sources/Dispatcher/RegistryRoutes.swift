import Compute
import Foundation
import Hummingbird
import JobProtocol
import JobQueue
import ModelStore
import NIOCore
import Prometheus
import RedisClient

/// The model and dataset registry over HTTP: uploads streamed into the registry as they arrive
/// (`ModelRegistry.push(streaming:)`, `DatasetStore.push(name:streaming:)`: never held whole), version and alias
/// listings, and alias moves with a compare-and-set.
///
/// Who may call them: any valid key may list; pushing a model or dataset and moving an alias need an **operator**
/// key, because the registry is shared by every tenant (a push or an alias move changes what `name:production`
/// runs for all of them).
extension Dispatcher {
    static let registryOperations: [(method: String, path: String)] = [
        ("POST", "/v1/models"), ("GET", "/v1/models"), ("GET", "/v1/models/{name}/versions"),
        ("PUT", "/v1/models/{name}/aliases/{alias}"), ("POST", "/v1/datasets"), ("GET", "/v1/datasets"),
    ]

    func addRegistryRoutes(to router: Router<BasicRequestContext>) {
        router.post("/v1/models") { request, _ in try await pushModel(request) }
        router.get("/v1/models") { _, _ in try await listModels() }
        router.get("/v1/models/{name}/versions") { _, context in try await modelVersions(name: context.parameters.get("name") ?? "") }
        router.put("/v1/models/{name}/aliases/{alias}") { request, context in
            try await moveAlias(request, name: context.parameters.get("name") ?? "", alias: context.parameters.get("alias") ?? "")
        }
        router.post("/v1/datasets") { request, _ in try await pushDataset(request) }
        router.get("/v1/datasets") { _, _ in try await listDatasets() }
    }

    // MARK: - Models

    /// `POST /v1/models?name=N[&activation=relu][&config=<JSON>]`, the safetensors file as the body
    /// (`application/octet-stream`).
    func pushModel(_ request: Request) async throws -> Response {
        try Self.requireOperator("pushing a model")
        try Self.requireMediaType(request, ["application/octet-stream"], what: "a safetensors file")
        let query = request.uri.queryParameters
        var problems: [FieldProblem] = []
        let name = Self.registryName(query.get("name"), what: "model", &problems)
        var config: ModelConfig?
        if let text = query.get("config"), !text.isEmpty {
            do { config = try ModelConfig(jsonString: text) } catch {
                problems.append(FieldProblem(parameter: "config", "is not a model config (JSON with \"layers\": [{\"weight\", \"bias\", \"activation\"}]): \(String(describing: error).prefix(200))"))
            }
        }
        var activation = Activation.relu
        if let text = query.get("activation") {
            if let parsed = Activation(rawValue: text) { activation = parsed } else {
                problems.append(FieldProblem(parameter: "activation", "must be one of \(Activation.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text.prefix(32))'"))
            }
        }
        if !problems.isEmpty { throw Problem(.badRequest, detail: "a query parameter is not valid", errors: problems) }
        let limit = try uploadLimit(request)
        let registry = inferenceModels.registry
        let version = try await registryCall { [config, activation] in
            try await registry.push(streaming: Self.pieces(request), config: config, activation: activation, name: name, limit: limit,
                                    expectedBytes: request.headers[.contentLength].flatMap { Int($0) }, metadata: ["source": "POST /v1/models"])
        }
        access.metrics.registryUpload(kind: "model", bytes: version.bytes)
        return Self.json(.created, Self.versionJSON(version), headers: [.location: "/v1/models/\(name)/versions"])
    }

    func listModels() async throws -> Response {
        let registry = inferenceModels.registry
        let models = try await registryCall { () -> [JSONValue] in
            var models: [JSONValue] = []
            for name in try await registry.names() {
                let versions = try await registry.versions(name)
                guard let latest = versions.last else { continue }
                let aliases = try await registry.aliases(name)
                models.append(.object([
                    "name": .string(name), "latestVersion": .number(Double(latest.version)),
                    "precision": .string(latest.precision), "versions": .number(Double(versions.count)),
                    "aliases": .object(aliases.mapValues { .number(Double($0)) }),
                ]))
            }
            return models
        }
        return Self.json(.ok, .object(["models": .array(models)]))
    }

    func modelVersions(name: String) async throws -> Response {
        guard isValidRegistryName(name) else { throw Self.noModel(name) }
        let registry = inferenceModels.registry
        let (versions, aliases) = try await registryCall { (try await registry.versions(name), try await registry.aliases(name)) }
        guard !versions.isEmpty else { throw Self.noModel(name) }
        return Self.json(.ok, .object([
            "name": .string(name), "versions": .array(versions.map(Self.versionJSON)),
            "aliases": .object(aliases.mapValues { .number(Double($0)) }),
        ]))
    }

    /// `PUT /v1/models/{name}/aliases/{alias}` with `{"version": N, "expected": M|null}`: moves the alias only if it
    /// still points at `expected` (`null`: it must not exist yet); 409 naming the current target otherwise.
    func moveAlias(_ request: Request, name: String, alias: String) async throws -> Response {
        try Self.requireOperator("moving an alias")
        let body = try await readJSON(request)
        var problems: [FieldProblem] = []
        if case .object(let members) = body {
            for key in members.keys where key != "version" && key != "expected" {
                problems.append(FieldProblem(pointer: JSONPointer.appending("", key), "is not a member: send {\"version\": N, \"expected\": M or null}"))
            }
        } else {
            problems.append(FieldProblem(pointer: "", "must be an object {\"version\": N, \"expected\": M or null}"))
        }
        let version = Self.versionNumber(body["version"], pointer: "/version", required: true, &problems)
        var expected: Int?
        switch body["expected"] {
        case nil:
            if case .object = body {
                problems.append(FieldProblem(pointer: "/expected", "is required: the version the alias points at now, or null if it does not exist yet (a compare-and-set)"))
            }
        case .null?: expected = nil
        case let value?: expected = Self.versionNumber(value, pointer: "/expected", required: true, &problems)
        }
        if !isValidRegistryName(alias) || Int(alias) != nil || alias == "latest" {
            problems.append(FieldProblem(parameter: "alias", "must be 1–64 of A–Z a–z 0–9 _ - ., not a number and not 'latest'"))
        }
        if !problems.isEmpty { throw Self.invalid(Problems(problems)) }
        guard isValidRegistryName(name) else { throw Self.noModel(name) }
        let registry = inferenceModels.registry
        let target = version ?? 1
        let (moved, current) = try await registryCall { [expected] in try await registry.switchAlias(alias, name: name, expected: expected, to: target) }
        guard moved else {
            let now = current.map { "version \($0)" } ?? "nothing (the alias does not exist)"
            throw Problem(.conflict, detail: "alias '\(name):\(alias)' points at \(now), not at the expected \(expected.map { "version \($0)" } ?? "nothing"): it moved meanwhile; read GET /v1/models/\(name)/versions and retry with \"expected\": \(current.map(String.init) ?? "null")",
                          errors: [FieldProblem(pointer: "/expected", "the alias points at \(current.map(String.init) ?? "null") now")])
        }
        return Self.json(.ok, .object([
            "name": .string(name), "alias": .string(alias), "version": .number(Double(target)),
            "previous": current.map { .number(Double($0)) } ?? .null,
        ]))
    }

    // MARK: - Datasets

    /// `POST /v1/datasets?name=N[&format=npy|csv]`; the format from the parameter, else the Content-Type
    /// (`text/csv`, `application/x-npy`), else the bytes (the NumPy magic or CSV).
    func pushDataset(_ request: Request) async throws -> Response {
        try Self.requireOperator("pushing a dataset")
        let mediaType = try Self.requireMediaType(request, ["application/octet-stream", "text/csv", "application/x-npy"],
                                                  what: "a .npy or CSV file")
        let query = request.uri.queryParameters
        var problems: [FieldProblem] = []
        let name = Self.registryName(query.get("name"), what: "dataset", &problems)
        if name == "names" { problems.append(FieldProblem(parameter: "name", "'names' is reserved: choose another name")) }
        var format = ["text/csv": "csv", "application/x-npy": "npy"][mediaType]
        if let text = query.get("format") {
            if DatasetStore.formats.contains(text) { format = text } else {
                problems.append(FieldProblem(parameter: "format", "must be npy or csv, got '\(text.prefix(32))'"))
            }
        }
        if !problems.isEmpty { throw Problem(.badRequest, detail: "a query parameter is not valid", errors: problems) }
        let limit = try uploadLimit(request)
        let store = inferenceModels.datasets
        let record = try await registryCall { [format] in
            try await store.push(name: name, streaming: Self.pieces(request), format: format, limit: limit,
                                 metadata: ["source": "POST /v1/datasets"])
        }
        inferenceModels.forgetDataset(name)
        access.metrics.registryUpload(kind: "dataset", bytes: record.bytes)
        return Self.json(.created, Self.datasetJSON(record))
    }

    func listDatasets() async throws -> Response {
        let store = inferenceModels.datasets
        let records = try await registryCall { try await store.list() }
        return Self.json(.ok, .object(["datasets": .array(records.map(Self.datasetJSON))]))
    }

    // MARK: - Shared

    /// The body as `[UInt8]` pieces, as Hummingbird hands them over: never collected whole.
    static func pieces(_ request: Request) -> AsyncMapSequence<RequestBody, [UInt8]> {
        request.body.map { Array($0.readableBytesView) }
    }

    /// The configured upload limit; 413 at once when the Content-Length says the body is over it.
    func uploadLimit(_ request: Request) throws -> Int {
        let limit = configuration.uploadLimitBytes
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
            throw Self.uploadTooLarge(limit)
        }
        return limit
    }

    static func uploadTooLarge(_ limit: Int) -> Problem {
        Problem(.contentTooLarge, detail: "the upload is over the limit of \(limit) bytes (jobfarm serve --upload-limit, JOBFARM_SERVE_UPLOAD_LIMIT); nothing was stored")
    }

    /// Runs a registry call: 503 while the circuit is open or Redis fails, the registry's own errors as problems
    /// (`invalidModel`/`invalidArgument` 422, `notFound` 404, `tooLarge` 413).
    func registryCall<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        guard breaker.mayAllowCall else { throw redisUnavailable() }
        do {
            return try await body()
        } catch let error as ModelStoreError {
            switch error {
            case .invalidModel(let message), .invalidArgument(let message):
                throw Problem(.unprocessableContent, detail: "the upload was refused; nothing was stored",
                              errors: [FieldProblem(pointer: "", message)])
            case .notFound(let message): throw Problem(.notFound, detail: message)
            case .tooLarge: throw Self.uploadTooLarge(configuration.uploadLimitBytes)
            case .corrupt(let message), .io(let message):
                throw Problem(.serviceUnavailable, detail: "the registry is failing: \(message)", headers: [.retryAfter: "1"])
            }
        } catch let error as RedisError {
            throw JobFarmError(error, operation: "use the model registry")
        }
    }

    static func requireOperator(_ action: String) throws {
        guard Caller.current?.isOperator ?? false else {
            throw Problem(.forbidden, detail: "\(action) is for operators (the registry is shared by every tenant): use a key made with jobfarm apikey create --operator")
        }
    }

    /// 415 unless the Content-Type is one of `accepted`; returns the media type.
    @discardableResult
    static func requireMediaType(_ request: Request, _ accepted: [String], what: String) throws -> String {
        let contentType = request.headers[.contentType] ?? ""
        let mediaType = contentType.split(separator: ";").first.map { String($0).trimmingWhitespace.lowercased() } ?? ""
        guard accepted.contains(mediaType) else {
            throw Problem(.unsupportedMediaType,
                          detail: "Content-Type '\(contentType.prefix(100))' is not accepted: send \(what) as \(accepted.joined(separator: " or "))")
        }
        return mediaType
    }

    static func registryName(_ text: String?, what: String, _ problems: inout [FieldProblem]) -> String {
        guard let text else {
            problems.append(FieldProblem(parameter: "name", "is required: the \(what)'s name (1–64 of A–Z a–z 0–9 _ - .)"))
            return ""
        }
        if !isValidRegistryName(text) {
            problems.append(FieldProblem(parameter: "name", "must be 1–64 of A–Z a–z 0–9 _ - ., not starting with a dot; got '\(text.prefix(70))'"))
        }
        return text
    }

    static func versionNumber(_ value: JSONValue?, pointer: String, required: Bool, _ problems: inout [FieldProblem]) -> Int? {
        guard let value else {
            if required { problems.append(FieldProblem(pointer: pointer, "is required: a version number (1, 2, …)")) }
            return nil
        }
        guard case .number(let number) = value, number >= 1, number <= 1e15, number == number.rounded() else {
            problems.append(FieldProblem(pointer: pointer, "must be a version number (a whole number ≥ 1)"))
            return nil
        }
        return Int(number)
    }

    static func noModel(_ name: String) -> Problem {
        Problem(.notFound, detail: "no model '\(name.prefix(70))': push one with POST /v1/models?name=\(isValidRegistryName(name) ? name : "NAME")")
    }

    static func versionJSON(_ version: ModelVersion) -> JSONValue {
        .object([
            "name": .string(version.name), "version": .number(Double(version.version)),
            "precision": .string(version.precision), "sha256": .string(version.sha256),
            "bytes": .number(Double(version.bytes)), "inputs": .number(Double(version.inputs)),
            "outputs": .number(Double(version.outputs)), "createdAt": .string(rfc3339(version.createdAt)),
        ])
    }

    static func datasetJSON(_ record: DatasetRecord) -> JSONValue {
        .object([
            "name": .string(record.name), "format": .string(record.format), "sha256": .string(record.sha256),
            "bytes": .number(Double(record.bytes)), "createdAt": .string(rfc3339(record.createdAt)),
        ])
    }
}

extension DispatcherMetrics {
    static var uploadBytes: MetricNameDescriptor { MetricNameDescriptor(namespace: "jobfarm", subsystem: "registry", metricName: "upload", unitName: "bytes_total",
                                           helpText: "Bytes stored through POST /v1/models and POST /v1/datasets, by kind (model or dataset).") }

    func registryUpload(kind: String, bytes: Int) {
        registry.makeCounter(descriptor: Self.uploadBytes, labels: [("kind", kind)]).increment(by: Int64(bytes))
    }
}

extension DispatcherConfiguration {
    static let registryEnvironmentVariables: [(name: String, meaning: String)] = [
        ("JOBFARM_SERVE_UPLOAD_LIMIT", "largest model or dataset upload in bytes (268435456)"),
    ]

    /// `JOBFARM_SERVE_UPLOAD_LIMIT`.
    mutating func applyRegistryEnvironment(_ environment: [String: String]) throws {
        if let value = environment["JOBFARM_SERVE_UPLOAD_LIMIT"] {
            guard let number = Int(value) else { throw JobFarmError.invalidArgument("JOBFARM_SERVE_UPLOAD_LIMIT '\(value)' is not a number of bytes") }
            uploadLimitBytes = number
        }
    }
}
