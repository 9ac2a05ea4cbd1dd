Feature: Host rules
  A rule with a `host` takes only requests for that host. An exact host is compared whole and
  without regard to case, after any `:port` is dropped from the request's Host. A wildcard
  `*.suffix` takes every name that is exactly one DNS label in front of the suffix: neither the
  suffix itself nor names two labels deeper. When hosts overlap, an exact host beats a wildcard,
  and a wildcard beats a rule without host. A request no rule takes, with no default backend
  anywhere, gets a 404 from Portcullis itself.

  A host listed under `tls` is served over HTTPS with the certificate of its Secret; on plain
  HTTP it is redirected to HTTPS with 308.

  Every Service an Ingress names is backed by one echo pod that reports the request it received.

  Background:
    Given a namespace of its own
    And a TLS Secret "shop-tls" with a self-signed certificate for "shop.example.com"
    And the Ingress:
      """
      metadata:
        name: by-host
      spec:
        ingressClassName: portcullis
        tls:
          - hosts:
              - shop.example.com
            secretName: shop-tls
        rules:
          - host: "*.apps.example.com"
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: any-app
                      port:
                        number: 8080
          - host: shop.example.com
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: shop
                      port:
                        name: http
          - host: admin.apps.example.com
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: admin
                      port:
                        number: 8080
      """

  Scenario: a TLS host is served over HTTPS with the certificate of its Secret
    When I send a GET request for https://shop.example.com/
    Then the certificate presented is the one of Secret "shop-tls", valid for "shop.example.com"
    And the "shop" service answers
    And the backend received the Host "shop.example.com"

  Scenario: plain HTTP for a TLS host is redirected to the same URL over HTTPS
    When I send a GET request for http://shop.example.com/cart?id=3
    Then the response redirects with 308 to "https://shop.example.com/cart?id=3"
    When I follow the redirect
    Then the "shop" service answers
    And the backend received a GET request for "/cart?id=3" over HTTP/1.1

  Scenario: a Service port may be named instead of numbered
    When I send a GET request for https://shop.example.com/
    Then the "shop" service answers

  Scenario Outline: an exact host ignores case and the port in the Host header
    When I send a GET request for https://<host>/
    Then the "shop" service answers
    And the backend received the Host "<host>"

    Examples:
      | host                 |
      | SHOP.Example.com     |
      | shop.example.com:443 |

  Scenario Outline: a host that only resembles a rule's host is not taken
    When I send a GET request for http://<host>/
    Then Portcullis answers 404 itself

    Examples:
      | host                  |
      | cart.example.com      |
      | example.com           |
      | shop.example.com.evil |
      | www.shop.example.com  |

  Scenario: a wildcard takes a name one label in front of its suffix
    When I send a GET request for http://blog.apps.example.com/
    Then the "any-app" service answers
    And the backend received the Host "blog.apps.example.com"

  Scenario: a wildcard ignores case and the port in the Host header
    When I send a GET request for http://Blog.APPS.example.com:80/
    Then the "any-app" service answers

  Scenario Outline: a wildcard takes neither its suffix nor names more than one label deeper
    When I send a GET request for http://<host>/
    Then Portcullis answers 404 itself

    Examples:
      | host                     |
      | apps.example.com         |
      | en.blog.apps.example.com |
      | blogapps.example.com     |

  Scenario: an exact host beats a wildcard that also covers it
    When I send a GET request for http://admin.apps.example.com/
    Then the "admin" service answers

  Scenario: a rule without host takes any host, after exact hosts and wildcards
    Given the Ingress:
      """
      metadata:
        name: any-host
      spec:
        ingressClassName: portcullis
        rules:
          - http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: anyone
                      port:
                        number: 8080
      """
    When I send a GET request for http://cart.example.com/
    Then the "anyone" service answers
    When I send a GET request for http://blog.apps.example.com/
    Then the "any-app" service answers
    When I send a GET request for http://admin.apps.example.com/
    Then the "admin" service answers
