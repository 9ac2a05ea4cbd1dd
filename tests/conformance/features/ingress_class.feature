Feature: Ingress class
  Portcullis handles an Ingress when its `spec.ingressClassName`, or the older
  `kubernetes.io/ingress.class` annotation, names the class `portcullis`; or when it names no class
  at all and the IngressClass `portcullis` is marked as the cluster's default. Every other Ingress
  belongs to another controller: Portcullis neither routes it nor writes its status.

  Every Service an Ingress names is backed by one echo pod that reports the request it received.

  Background:
    Given a namespace of its own

  Scenario: an Ingress naming our class is routed
    Given the Ingress:
      """
      metadata:
        name: ours
      spec:
        ingressClassName: portcullis
        rules:
          - host: ours.example
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: ours
                      port:
                        number: 8080
      """
    When I send a GET request for http://ours.example/
    Then the "ours" service answers

  Scenario: an Ingress naming our class in the legacy annotation is routed
    Given the Ingress:
      """
      metadata:
        name: legacy
        annotations:
          kubernetes.io/ingress.class: portcullis
      spec:
        rules:
          - host: legacy.example
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: legacy
                      port:
                        number: 8080
      """
    When I send a GET request for http://legacy.example/
    Then the "legacy" service answers

  Scenario: an Ingress naming no class is routed when our class is the default
    Given the IngressClass "portcullis" is the default class
    And the Ingress:
      """
      metadata:
        name: classless
      spec:
        rules:
          - host: classless.example
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: classless
                      port:
                        number: 8080
      """
    When I send a GET request for http://classless.example/
    Then the "classless" service answers

  Scenario: an Ingress naming another class is not routed
    Given the Ingress:
      """
      metadata:
        name: theirs
      spec:
        ingressClassName: someone-else
        rules:
          - host: theirs.example
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: theirs
                      port:
                        number: 8080
      """
    When I send a GET request for http://theirs.example/
    Then Portcullis answers 404 itself

  @cluster
  Scenario: an Ingress naming another class gets no status from Portcullis
    Given the Ingress:
      """
      metadata:
        name: theirs
      spec:
        ingressClassName: someone-else
        rules:
          - host: theirs.example
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: theirs
                      port:
                        number: 8080
      """
    Then the status of Ingress "theirs" stays without an address

  Scenario: an Ingress naming another class in the legacy annotation is not routed
    Given the Ingress:
      """
      metadata:
        name: theirs-legacy
        annotations:
          kubernetes.io/ingress.class: someone-else
      spec:
        rules:
          - host: theirs.example
            http:
              paths:
                - path: /
                  pathType: Prefix
                  backend:
                    service:
                      name: theirs
                      port:
                        number: 8080
      """
    When I send a GET request for http://theirs.example/
    Then Portcullis answers 404 itself
