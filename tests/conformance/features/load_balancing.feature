Feature: Load balancing
  A Service with several ready pods and no session affinity has its requests spread over all of
  them. Portcullis picks a pod for every request, not for every connection, so even a single
  keep-alive connection reaches them all.

  Background:
    Given a namespace of its own
    And the Ingress:
      """
      metadata:
        name: spread
      spec:
        ingressClassName: portcullis
        defaultBackend:
          service:
            name: replicas
            port:
              number: 8080
      """
    And the "replicas" Service has 10 ready pods

  Scenario: requests on new connections reach every pod
    When I send 100 GET requests for http://spread.example/, each on a new connection
    Then every response has status 200
    And 10 different pods answered

  Scenario: requests on one keep-alive connection reach every pod
    When I send 100 GET requests for http://spread.example/ over one connection
    Then every response has status 200
    And 10 different pods answered
