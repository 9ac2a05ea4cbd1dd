Feature: Path rules
  Within a host, a request goes to the rule whose path matches it.

  `Exact` compares the whole request path, case and trailing slash included. `Prefix` compares the
  path element by element (elements are separated by `/`): `/docs` takes `/docs`, `/docs/` and
  `/docs/intro`, never `/docsearch`, and a rule path's trailing slash is ignored, so `/docs/` takes
  `/docs` too. Comparison is case-sensitive. `ImplementationSpecific` behaves as `Prefix`. The query
  string never takes part in matching.

  When several rules match, the longest rule path wins; at equal length `Exact` beats `Prefix`. A
  request no rule takes, with no default backend anywhere, gets a 404 from Portcullis itself.

  Every Service an Ingress names is backed by one echo pod that reports the request it received.

  Background:
    Given a namespace of its own
    And the Ingress:
      """
      metadata:
        name: by-path
      spec:
        ingressClassName: portcullis
        rules:
          - host: exact.example
            http:
              paths:
                - path: /docs
                  pathType: Exact
                  backend:
                    service:
                      name: docs-exact
                      port:
                        number: 8080
          - host: prefix.example
            http:
              paths:
                - path: /docs
                  pathType: Prefix
                  backend:
                    service:
                      name: docs-prefix
                      port:
                        number: 8080
                - path: /api
                  pathType: Prefix
                  backend:
                    service:
                      name: api
                      port:
                        number: 8080
                - path: /api/v2
                  pathType: Prefix
                  backend:
                    service:
                      name: api-v2
                      port:
                        number: 8080
          - host: both.example
            http:
              paths:
                - path: /docs
                  pathType: Prefix
                  backend:
                    service:
                      name: docs-prefix
                      port:
                        number: 8080
                - path: /docs
                  pathType: Exact
                  backend:
                    service:
                      name: docs-exact
                      port:
                        number: 8080
          - host: slash.example
            http:
              paths:
                - path: /api/v2/
                  pathType: Prefix
                  backend:
                    service:
                      name: api-v2-slash
                      port:
                        number: 8080
                - path: /docs/
                  pathType: Exact
                  backend:
                    service:
                      name: docs-slash-exact
                      port:
                        number: 8080
          - host: implementation.example
            http:
              paths:
                - path: /docs
                  pathType: ImplementationSpecific
                  backend:
                    service:
                      name: docs-implementation
                      port:
                        number: 8080
      """

  Scenario Outline: an Exact path takes the request path <path>
    When I send a GET request for http://<host><path>
    Then the "<service>" service answers
    And the backend received a GET request for "<path>" over HTTP/1.1

    Examples:
      | host          | path            | service          |
      | exact.example | /docs           | docs-exact       |
      | exact.example | /docs?page=2    | docs-exact       |
      | slash.example | /docs/          | docs-slash-exact |

  Scenario Outline: an Exact path does not take <path>
    When I send a GET request for http://<host><path>
    Then Portcullis answers 404 itself

    Examples:
      | host          | path        |
      | exact.example | /docs/      |
      | exact.example | /DOCS       |
      | exact.example | /doc        |
      | exact.example | /docs/intro |
      | exact.example | /blog       |
      | slash.example | /docs       |

  Scenario Outline: a Prefix path takes <path> element by element, the longest rule winning
    When I send a GET request for http://<host><path>
    Then the "<service>" service answers
    And the backend received a GET request for "<path>" over HTTP/1.1

    Examples:
      | host           | path            | service      |
      | prefix.example | /docs           | docs-prefix  |
      | prefix.example | /docs/          | docs-prefix  |
      | prefix.example | /docs/intro     | docs-prefix  |
      | prefix.example | /docs?page=2    | docs-prefix  |
      | prefix.example | /api            | api          |
      | prefix.example | /api/v1/users   | api          |
      | prefix.example | /api/v2         | api-v2       |
      | prefix.example | /api/v2/users   | api-v2       |
      | prefix.example | /api/v2x        | api          |
      | slash.example  | /api/v2         | api-v2-slash |
      | slash.example  | /api/v2/        | api-v2-slash |
      | slash.example  | /api/v2/users   | api-v2-slash |

  Scenario Outline: a Prefix path does not take <path>
    When I send a GET request for http://<host><path>
    Then Portcullis answers 404 itself

    Examples:
      | host           | path       |
      | prefix.example | /DOCS      |
      | prefix.example | /docsearch |
      | prefix.example | /doc       |
      | prefix.example | /          |
      | slash.example  | /api/v2x   |

  Scenario Outline: at equal length an Exact path beats a Prefix path
    When I send a GET request for http://both.example<path>
    Then the "<service>" service answers

    Examples:
      | path        | service     |
      | /docs       | docs-exact  |
      | /docs/      | docs-prefix |
      | /docs/intro | docs-prefix |

  Scenario Outline: an ImplementationSpecific path behaves as a Prefix path
    When I send a GET request for http://implementation.example<path>
    Then <answer>

    Examples:
      | path        | answer                                      |
      | /docs       | the "docs-implementation" service answers   |
      | /docs/intro | the "docs-implementation" service answers   |
      | /docsearch  | Portcullis answers 404 itself               |
