@cluster
Feature: Ingress status
  For every Ingress it handles, Portcullis writes where it is exposed into
  `status.loadBalancer.ingress`: the address given by `--publish-status-address` (or the addresses
  of the `--publish-service` Service). Ingresses of other classes keep the status their own
  controller writes (see the Ingress class feature). Status lives in the API server, so these
  scenarios run only against a cluster.

  The controller of these scenarios publishes the address 192.0.2.80.

  Background:
    Given a namespace of its own

  Scenario: an Ingress with rules shows the published address
    Given the Ingress:
      """
      metadata:
        name: with-rules
      spec:
        ingressClassName: portcullis
        rules:
          - host: shop.example
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: shop
                      port:
                        number: 8080
      """
    Then the status of Ingress "with-rules" shows the address 192.0.2.80

  Scenario: an Ingress with only a default backend shows the published address
    Given the Ingress:
      """
      metadata:
        name: default-only
      spec:
        ingressClassName: portcullis
        defaultBackend:
          service:
            name: fallback
            port:
              number: 8080
      """
    Then the status of Ingress "default-only" shows the address 192.0.2.80

  Scenario: an Ingress with TLS shows the published address
    Given a TLS Secret "shop-tls" with a self-signed certificate for "shop.example"
    And the Ingress:
      """
      metadata:
        name: with-tls
      spec:
        ingressClassName: portcullis
        tls:
          - hosts:
              - shop.example
            secretName: shop-tls
        rules:
          - host: shop.example
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: shop
                      port:
                        number: 8080
      """
    Then the status of Ingress "with-tls" shows the address 192.0.2.80
