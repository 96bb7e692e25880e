//! Table tests of the incident machine.
