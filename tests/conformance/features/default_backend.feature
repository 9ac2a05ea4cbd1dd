Feature: Default backend
  `spec.defaultBackend` names the Service that answers what no rule takes. An Ingress of our
  class that has nothing but a default backend therefore answers every request, whatever its
  Host (even none), path or method. Portcullis forwards the request as the client sent it, over
  HTTP/1.1, and the response reaches the client with its framing headers and a `Server` header.

  Every Service an Ingress names is backed by one echo pod that reports the request it received.

  Background:
    Given a namespace of its own
    And the Ingress:
      """
      metadata:
        name: catch-all
      spec:
        ingressClassName: portcullis
        defaultBackend:
          service:
            name: fallback
            port:
              number: 8080
      """

  Scenario Outline: <method> <path> for <host> reaches the default backend unchanged
    When I send a <method> request for http://<host><path>
    Then the "fallback" service answers
    And the response is HTTP/1.1 with the headers Content-Length, Content-Type, Date and Server
    And the backend received a <method> request for "<path>" over HTTP/1.1
    And the backend received the Host "<host>"
    And the backend received the header User-Agent: Go-http-client/1.1

    Examples:
      | method | host             | path            |
      | GET    | shop.example     | /               |
      | GET    | shop.example     | /cart/items     |
      | POST   | api.example      | /               |
      | DELETE | api.example      | /orders/7       |
      | PATCH  | shop.example     | /orders/7       |
      | GET    | shop.example     | /search?q=boots |

  Scenario: a request whose Host is only the controller's IP address reaches the default backend
    When I send a PUT request for /orders/7 to the controller's IP address
    Then the "fallback" service answers
    And the backend received a PUT request for "/orders/7" over HTTP/1.1

  Scenario: HTTPS requests reach the default backend too
    When I send a GET request for https://shop.example/cart
    Then the "fallback" service answers
    And the backend received a GET request for "/cart" over HTTP/1.1

  Scenario: with rules present, the default backend answers only what no rule takes
    Given the Ingress:
      """
      metadata:
        name: api-only
      spec:
        ingressClassName: portcullis
        rules:
          - host: api.example
            http:
              paths:
                - path: /v1
                  pathType: Prefix
                  backend:
                    service:
                      name: api-v1
                      port:
                        number: 8080
      """
    When I send a GET request for http://api.example/v1/users
    Then the "api-v1" service answers
    When I send a GET request for http://api.example/v2/users
    Then the "fallback" service answers
    When I send a GET request for http://other.example/v1/users
    Then the "fallback" service answers
